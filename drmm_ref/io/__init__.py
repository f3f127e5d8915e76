"""Model files: parameter files and training checkpoints, one format (SPEC §6; ``docs/guarantees.md``).

* :mod:`.params` -- ``save_params`` / ``load_params``: the DRMM parameters as a versioned,
  checksummed ``.npz`` (format ``drmm_ref.params``), written atomically;
* :mod:`.checkpoint` -- ``save_checkpoint`` / ``load_checkpoint``: a parameter file plus the
  training state (optimiser, generator, history, position in the epoch and in the learning-rate
  schedule), so that :func:`load_params` reads a checkpoint's model too.

Layer: imports the backend, the models and (inside the checkpoint functions) the learning state
types; nothing below it imports this package.
"""

from .checkpoint import (CHECKPOINT_FORMAT, Checkpoint, CheckpointError, NoTrainingState, load_checkpoint,
                         save_checkpoint)
from .params import FORMAT, FORMAT_VERSION, DRMMFileError, load_params, save_params

__all__ = ["FORMAT", "FORMAT_VERSION", "CHECKPOINT_FORMAT", "DRMMFileError", "CheckpointError", "NoTrainingState",
           "Checkpoint", "save_params", "load_params", "save_checkpoint", "load_checkpoint"]
