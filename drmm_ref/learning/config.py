"""The training configuration: everything that defines a run, read by :func:`~drmm_ref.learning.fit`
(the optimisation fields) and :func:`~drmm_ref.learning.train` (the data, evaluation and file fields).

Stored in every log and checkpoint (:meth:`TrainConfig.to_dict`); a field added since a file was
written takes its default when the file is read, and a field at its default that older files lack
(``lr_schedule``, ``relu_topdown``, ``m_step`` and the whole-set fields) is left out of
:meth:`TrainConfig.to_dict`, so old runs resume and compare equal.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from ..drmm import Network, preset
from ..numerics import dtype_name
from . import _checks
from .block_step import block_names
from .objectives import LossWeights
from .optim import LRSchedule, make_optimizer
from .optim import lr_schedule as parse_lr_schedule
from .steps import EGConfig

__all__ = ["TrainConfig", "MODELS"]

MODELS = ("drmm", "dcn")
M_STEPS = ("g-step", "whole-set")
WHOLE_SET_LATENTS = ("stored", "recompute")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (stored in its log and checkpoints).

    Parameters
    ----------
    model : {"drmm", "dcn"}
        ``drmm``: EG training (E-step, G-step on CE + RC + NN (+ H), closed-form priors);
        ``dcn``: backprop on CE alone (the baseline).
    net : str or Network
        A preset name (``small2``, ``conv-small``, ``conv-small-ladder``, ``tiny``) or a Network.
    epochs : int
    batch_size : int, default 128
    optimizer : {"adam", "sgd"}, default "adam"
    lr : float, default 1e-3
    momentum : float, default 0.9 (SGD only)
    seed : int
        Seeds the initialisation and the batch order.
    dtype : {"float32", "float64"}
    weights : LossWeights
        EG objective weights. A ``dcn`` run stores the backprop objective (CE alone) whatever is
        passed, so its configuration says what it trained on.
    cg_blocks, k_cg, cg_eta, cg_damping :
        Optional exact block steps on RC after each G-step (see :class:`EGConfig`); none by default.
    n_train : int, optional
        Train on the first ``n_train`` training images only.
    n_eval : int, optional
        Evaluate on the first ``n_eval`` validation and test images only.
    n_labels : int, optional
        None (default): every training image is labelled (supervised). ``0``: unsupervised EG
        (``drmm`` only). ``N > 0``: semi-supervised, N class-balanced labels (see the module
        docstring).
    label_seed : int, optional
        Seed of the labelled subset (default: ``seed``).
    init_from : str, optional
        Start from the parameters of this checkpoint (or parameter file) instead of ``init_params(net, seed)`` (e.g.
        unsupervised pre-training followed by semi-supervised training); the optimiser starts afresh.
        With labels, the checkpoint's classes are first renumbered to match the labelled images
        (:func:`~drmm_ref.learning.semi.align_classes`; the mapping is logged).
    monitor_size : int, default 1000
        Size of the EG monitoring subset (first training images).
    data : {"mnist", "synthetic"}
        Where :func:`load_data` gets the images (``synthetic`` = :func:`synthetic_digits`).
    backend : {"numpy", "array_api_strict", "cupy"}
    checkpoint_every_steps : int, optional
        Also write a mid-epoch checkpoint every this many steps (None: not by step count).
    checkpoint_every_seconds : float, optional, default 600
        Also write a mid-epoch checkpoint when this many seconds have passed since the last
        checkpoint (None: not by time). A killed run then loses at most this much work. Changing
        either cadence does not change the run (it may be changed when resuming).
    lr_schedule : str, default "constant"
        The learning rate per epoch (:func:`~drmm_ref.learning.optim.lr_schedule`): ``constant``,
        ``linear-decay:START_EPOCH`` (``lr`` for epochs 1..START_EPOCH, then a straight line to 0 at
        epoch ``epochs + 1``; ``epochs`` may then not change on resume) or ``step:EVERY:FACTOR``.
        Stored in its canonical form; left out of :meth:`to_dict` when ``constant``.
    relu_topdown : bool, default False
        EG renders with the NIPS paper's ReLU in the top-down reconstruction (SPEC §5, the second form
        of non-negativity; :class:`~drmm_ref.learning.EGConfig`). Left out of :meth:`to_dict` when False.
    m_step : {"g-step", "whole-set"}, default "g-step"
        ``g-step``: the mini-batch EG epoch (G-steps, the optional damped mini-batch block steps
        ``cg_blocks``, closed-form priors at the epoch's end). ``whole-set`` (``drmm`` only): the same
        mini-batch pass, then at the epoch's end the whole-set M-step of the DRMM's EM instead of the
        closed forms alone: an E-step over every training image and, at those fixed latents, the
        closed forms and one exact CGLS block step on RC over the whole set per block of
        ``m_step_blocks`` (:mod:`~drmm_ref.learning.whole_set`; ``k_cg`` iterations, damping
        ``cg_damping``; ``docs/learning.md``). Not with ``relu_topdown`` (the whole-set operator renders
        without the ReLU masks). Left out of :meth:`to_dict` when ``g-step``.
    chunk_size : int, default 500
        Whole-set M-step: images per chunk (working memory ``O(chunk_size)``). Left out of
        :meth:`to_dict` at its default.
    m_step_blocks : tuple of str, optional
        Whole-set M-step: the blocks, in order (default None: every block, ``filters_1 .. filters_L``
        then ``class_templates``). Left out of :meth:`to_dict` when None.
    m_step_latents : {"stored", "recompute"}, default "stored"
        Whole-set M-step: keep the E-step's latents packed on the host (~11 kB per conv-small image)
        or recompute them per chunk and pass (:class:`~drmm_ref.learning.whole_set.WholeSetLatents`).
        Left out of :meth:`to_dict` at its default.

    Every field is checked on construction (``ValueError`` / ``TypeError`` naming it): counts are
    integers in range (``n_train = -1`` or ``n_eval = 0`` are errors, not slice bounds), rates are
    finite and positive, blocks exist in the network.
    """

    model: str = "drmm"
    net: Any = "small2"
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    seed: int = 0
    dtype: str = "float32"
    weights: LossWeights = LossWeights()
    cg_blocks: tuple[str, ...] = ()
    k_cg: int = 10
    cg_eta: float = 0.5
    cg_damping: float = 0.0
    n_train: int | None = None
    n_eval: int | None = None
    eval_batch: int = 1000
    monitor_size: int = 1000
    data: str = "mnist"
    backend: str = "numpy"
    n_labels: int | None = None
    label_seed: int | None = None
    init_from: str | None = None
    checkpoint_every_steps: int | None = None
    checkpoint_every_seconds: float | None = 600.0
    lr_schedule: str = "constant"
    relu_topdown: bool = False
    m_step: str = "g-step"
    chunk_size: int = 500
    m_step_blocks: tuple[str, ...] | None = None
    m_step_latents: str = "stored"

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        set_("epochs", _checks.count(self.epochs, "epochs", 0))
        set_("batch_size", _checks.count(self.batch_size, "batch_size", 1))
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        set_("lr", _checks.finite_positive(self.lr, "lr"))
        set_("momentum", _checks.fraction(self.momentum, "momentum", low_open=False, high_open=True))
        set_("seed", _checks.count(self.seed, "seed", 0))
        set_("k_cg", _checks.count(self.k_cg, "k_cg", 1))
        set_("cg_eta", _checks.fraction(self.cg_eta, "cg_eta"))
        set_("cg_damping", _checks.finite_nonnegative(self.cg_damping, "cg_damping"))
        set_("n_train", _checks.optional_count(self.n_train, "n_train", 1))
        set_("n_eval", _checks.optional_count(self.n_eval, "n_eval", 1))
        set_("eval_batch", _checks.count(self.eval_batch, "eval_batch", 1))
        set_("monitor_size", _checks.count(self.monitor_size, "monitor_size", 0))
        set_("label_seed", _checks.optional_count(self.label_seed, "label_seed", 0))
        set_("checkpoint_every_steps", _checks.optional_count(self.checkpoint_every_steps, "checkpoint_every_steps"))
        if self.checkpoint_every_seconds is not None:
            set_("checkpoint_every_seconds", _checks.finite_positive(self.checkpoint_every_seconds,
                                                                     "checkpoint_every_seconds"))
        if self.backend not in ("numpy", "array_api_strict", "cupy"):
            raise ValueError(f"backend must be 'numpy', 'array_api_strict' or 'cupy', got {self.backend!r}")
        if self.init_from is not None and not isinstance(self.init_from, (str, os.PathLike)):
            raise TypeError(f"init_from must be a checkpoint path or None, got {type(self.init_from).__name__}")
        if self.data not in ("mnist", "synthetic"):
            raise ValueError(f"data must be 'mnist' or 'synthetic', got {self.data!r}")
        if isinstance(self.weights, dict):
            object.__setattr__(self, "weights", LossWeights(**self.weights))
        if self.model == "dcn":
            object.__setattr__(self, "weights", LossWeights(ce=1.0, rc=0.0, nn=0.0, h=0.0))
        object.__setattr__(self, "cg_blocks", tuple(self.cg_blocks))
        if self.n_labels is not None:
            if isinstance(self.n_labels, bool) or int(self.n_labels) != self.n_labels or self.n_labels < 0:
                raise ValueError(f"n_labels must be None or an integer >= 0, got {self.n_labels!r}")
            if self.n_labels == 0 and self.model == "dcn":
                raise ValueError("n_labels=0 (unsupervised) needs model='drmm': a DCN has nothing to learn from")
            if self.n_train is not None and self.n_labels >= self.n_train:
                raise ValueError(f"n_labels={self.n_labels} leaves no unlabelled image among n_train={self.n_train} "
                                 "training images")
        if not isinstance(self.relu_topdown, bool):
            raise TypeError(f"relu_topdown must be True or False, got {self.relu_topdown!r}")
        if self.relu_topdown and self.model != "drmm":
            raise ValueError("relu_topdown renders the DRMM's top-down reconstruction; it needs model='drmm'")
        if self.m_step not in M_STEPS:
            raise ValueError(f"m_step must be one of {M_STEPS}, got {self.m_step!r}")
        if self.m_step == "whole-set" and self.model != "drmm":
            raise ValueError("m_step='whole-set' is the DRMM's EM M-step; it needs model='drmm'")
        if self.m_step == "whole-set" and self.relu_topdown:
            raise ValueError("m_step='whole-set' renders without relu_topdown's ReLU masks; use one or the other")
        set_("chunk_size", _checks.count(self.chunk_size, "chunk_size", 1))
        if self.m_step_latents not in WHOLE_SET_LATENTS:
            raise ValueError(f"m_step_latents must be one of {WHOLE_SET_LATENTS}, got {self.m_step_latents!r}")
        if self.m_step == "g-step":
            stray = [name for name, default in (("chunk_size", 500), ("m_step_blocks", None),
                                                ("m_step_latents", "stored")) if getattr(self, name) != default]
            if stray:
                raise ValueError(f"{', '.join(stray)} set the whole-set M-step; they need m_step='whole-set'")
        if self.m_step_blocks is not None:
            if isinstance(self.m_step_blocks, str):
                raise TypeError(f"m_step_blocks must be a sequence of block names or None, got {self.m_step_blocks!r}")
            set_("m_step_blocks", tuple(self.m_step_blocks))
            if not self.m_step_blocks:
                raise ValueError("m_step_blocks must name at least one block (None: every block)")
            if len(set(self.m_step_blocks)) != len(self.m_step_blocks):
                raise ValueError(f"m_step_blocks names a block twice: {list(self.m_step_blocks)}")
        schedule = parse_lr_schedule(self.lr_schedule)
        schedule.check_epochs(self.epochs)
        set_("lr_schedule", schedule.spec)
        set_("dtype", dtype_name(self.dtype))
        names = block_names(self.network.L)  # also validates the net
        bad = [b for b in self.cg_blocks if b not in names]
        if bad:
            raise ValueError(f"cg_blocks {bad} are not blocks of the network; choose from {names}")
        bad = [b for b in self.m_step_blocks or () if b not in names]
        if bad:
            raise ValueError(f"m_step_blocks {bad} are not blocks of the network; choose from {names}")

    @property
    def semi_supervised(self) -> bool:
        """True when the run splits the training set into labelled and unlabelled images."""
        return self.n_labels is not None

    @property
    def network(self) -> Network:
        if isinstance(self.net, Network):
            return self.net
        if isinstance(self.net, dict):
            return Network.from_dict(self.net)
        return preset(self.net)

    def optimizer_object(self):
        kwargs = {"momentum": self.momentum} if self.optimizer == "sgd" else {}
        return make_optimizer(self.optimizer, self.lr, **kwargs)

    @property
    def schedule(self) -> LRSchedule:
        """The parsed :attr:`lr_schedule`."""
        return parse_lr_schedule(self.lr_schedule)

    def eg_config(self) -> EGConfig:
        return EGConfig(self.weights, self.cg_blocks, self.k_cg, self.cg_damping, self.cg_eta,
                        relu_topdown=self.relu_topdown)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["net"] = self.network.to_dict() if not isinstance(self.net, str) else self.net
        d["weights"] = self.weights.to_dict()
        d["cg_blocks"] = list(self.cg_blocks)
        if self.lr_schedule == "constant":  # the default: configurations and logs stay as before schedules
            del d["lr_schedule"]
        if not self.relu_topdown:  # likewise
            del d["relu_topdown"]
        defaults = {"m_step": "g-step", "chunk_size": 500, "m_step_blocks": None, "m_step_latents": "stored"}
        for name, default in defaults.items():  # likewise: the whole-set M-step's fields
            if d[name] == default:
                del d[name]
        if d.get("m_step_blocks") is not None:
            d["m_step_blocks"] = list(self.m_step_blocks)
        return d

    @property
    def whole_set_blocks(self) -> tuple[str, ...]:
        """The blocks of the whole-set M-step, in order (:attr:`m_step_blocks`, default every block)."""
        return block_names(self.network.L) if self.m_step_blocks is None else self.m_step_blocks

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; fields added since a log was written take their defaults.

        Raises
        ------
        ValueError
            A field this version does not know (the configuration was written by a newer
            drmm_ref), or an invalid value.
        """
        if not isinstance(d, dict):
            raise ValueError(f"a training configuration must be a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown configuration fields {unknown}: written by a newer drmm_ref? (upgrade it)")
        d = dict(d)
        if not isinstance(d.get("weights"), dict):
            raise ValueError("the configuration has no loss weights")
        d["weights"] = LossWeights(**d["weights"])
        d["cg_blocks"] = tuple(d.get("cg_blocks", ()))
        if d.get("m_step_blocks") is not None:
            d["m_step_blocks"] = tuple(d["m_step_blocks"])
        return cls(**d)

