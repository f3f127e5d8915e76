"""Training checkpoints live in :mod:`drmm_ref.io.checkpoint` (a checkpoint is a parameter file plus the
training state); these names stay importable from here."""

from ..io.checkpoint import CHECKPOINT_FORMAT, Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from ..io.params import meta_checksum as _meta_checksum  # noqa: F401 (tests reseal edited files with it)

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "CheckpointError", "CHECKPOINT_FORMAT"]
