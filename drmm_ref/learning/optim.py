"""First-order optimisers for the G-step and the backprop baseline: SGD (with momentum) and Adam.

Pure functions on trees of arrays (:mod:`._tree`): ``state = opt.init(tree)``,
``tree, state = opt.update(tree, grads, state)``. The state is a plain frozen dataclass of arrays
(and a step counter), so a checkpoint stores it exactly and a resumed run continues bit for bit.
A name missing from ``grads`` has a zero gradient. Settings are checked on construction: a
learning rate must be finite and > 0 (``inf`` or NaN is an error, not a diverging run), moments in
``[0, 1)``, ``eps > 0``.

* :class:`SGD`: ``v <- m v + g``, ``theta <- theta - lr v`` (heavy ball; ``momentum = 0`` is plain SGD).
* :class:`Adam` (Kingma & Ba 2015): ``m <- b1 m + (1-b1) g``, ``v <- b2 v + (1-b2) g^2``,
  ``theta <- theta - lr m_hat / (sqrt(v_hat) + eps)`` with the bias corrections ``m_hat = m/(1-b1^t)``,
  ``v_hat = v/(1-b2^t)``.

Learning-rate schedules (:class:`LRSchedule`, :func:`lr_schedule`): the rate of epoch ``e``
(1-based, of ``E``) is the optimiser's ``lr`` times a factor fixed at the start of the epoch:

* ``constant``: 1 (the default);
* ``linear-decay:S``: 1 for epochs 1..S, then ``(E + 1 - e) / (E + 1 - S)`` for epochs S+1..E: a
  straight line from ``lr`` at epoch S to 0 at epoch E+1, so the last epoch still steps (at
  ``lr / (E + 1 - S)``). Needs ``S < E``;
* ``step:K:F``: ``F ** floor((e - 1) / K)`` (``F`` in (0, 1]: times ``F`` every ``K`` epochs).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .. import _backend
from ._checks import finite_positive, fraction

__all__ = ["SGD", "SGDState", "Adam", "AdamState", "make_optimizer", "LRSchedule", "lr_schedule"]


def _zeros_like(tree: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, a in tree.items():
        xp = _backend.get_namespace(a)
        out[name] = xp.zeros(a.shape, dtype=a.dtype, device=_backend.device_of(a))
    return out


def _grad(grads: dict[str, Any], name: str, like: Any) -> Any:
    g = grads.get(name)
    if g is None:
        xp = _backend.get_namespace(like)
        return xp.zeros(like.shape, dtype=like.dtype, device=_backend.device_of(like))
    if tuple(g.shape) != tuple(like.shape):
        raise ValueError(f"gradient of {name} has shape {tuple(g.shape)} but the parameter has {tuple(like.shape)}")
    return g


@dataclasses.dataclass(frozen=True)
class SGDState:
    """Velocity per parameter and the number of steps taken."""

    velocity: dict[str, Any]
    step: int = 0


@dataclasses.dataclass(frozen=True)
class AdamState:
    """First and second moment estimates per parameter and the number of steps taken."""

    m: dict[str, Any]
    v: dict[str, Any]
    step: int = 0


@dataclasses.dataclass(frozen=True)
class SGD:
    """Stochastic gradient descent with heavy-ball momentum.

    Parameters
    ----------
    lr : float, default 0.01
    momentum : float in [0, 1), default 0.9
    """

    lr: float = 0.01
    momentum: float = 0.9
    name: str = dataclasses.field(default="sgd", init=False)

    def __post_init__(self):
        object.__setattr__(self, "lr", finite_positive(self.lr, "lr"))
        object.__setattr__(self, "momentum", fraction(self.momentum, "momentum", low_open=False, high_open=True))

    def init(self, tree: dict[str, Any]) -> SGDState:
        return SGDState(_zeros_like(tree), 0)

    def update(self, tree: dict[str, Any], grads: dict[str, Any], state: SGDState) -> tuple[dict[str, Any], SGDState]:
        new_tree, new_v = {}, {}
        for name, theta in tree.items():
            v = self.momentum * state.velocity[name] + _grad(grads, name, theta)
            new_v[name] = v
            new_tree[name] = theta - self.lr * v
        return new_tree, SGDState(new_v, state.step + 1)

    def to_dict(self) -> dict[str, Any]:
        return {"name": "sgd", "lr": self.lr, "momentum": self.momentum}


@dataclasses.dataclass(frozen=True)
class Adam:
    """Adam with bias correction.

    Parameters
    ----------
    lr : float, default 1e-3
    beta1, beta2 : float, default 0.9, 0.999
    eps : float, default 1e-8
    """

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    name: str = dataclasses.field(default="adam", init=False)

    def __post_init__(self):
        object.__setattr__(self, "lr", finite_positive(self.lr, "lr"))
        for name in ("beta1", "beta2"):
            object.__setattr__(self, name, fraction(getattr(self, name), name, low_open=False, high_open=True))
        object.__setattr__(self, "eps", finite_positive(self.eps, "eps"))

    def init(self, tree: dict[str, Any]) -> AdamState:
        return AdamState(_zeros_like(tree), _zeros_like(tree), 0)

    def update(self, tree: dict[str, Any], grads: dict[str, Any], state: AdamState) -> tuple[dict[str, Any], AdamState]:
        t = state.step + 1
        c1, c2 = 1.0 - self.beta1 ** t, 1.0 - self.beta2 ** t
        step_size = self.lr * math.sqrt(c2) / c1
        eps_hat = self.eps * math.sqrt(c2)  # = eps added to sqrt(v_hat), moved inside the corrected form
        new_tree, new_m, new_v = {}, {}, {}
        for name, theta in tree.items():
            xp = _backend.get_namespace(theta)
            g = _grad(grads, name, theta)
            m = self.beta1 * state.m[name] + (1.0 - self.beta1) * g
            v = self.beta2 * state.v[name] + (1.0 - self.beta2) * (g * g)
            new_m[name], new_v[name] = m, v
            new_tree[name] = theta - step_size * m / (xp.sqrt(v) + eps_hat)
        return new_tree, AdamState(new_m, new_v, t)

    def to_dict(self) -> dict[str, Any]:
        return {"name": "adam", "lr": self.lr, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}


def make_optimizer(name: str, lr: float | None = None, **kwargs: Any):
    """``SGD`` or ``Adam`` by name (``"sgd"``, ``"adam"``) with its default learning rate unless ``lr`` is given."""
    kinds = {"sgd": SGD, "adam": Adam}
    if name not in kinds:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(kinds)}")
    if lr is not None:
        kwargs["lr"] = lr
    return kinds[name](**kwargs)


@dataclasses.dataclass(frozen=True)
class LRSchedule:
    """A per-epoch learning-rate schedule (see the module docstring); build it with :func:`lr_schedule`.

    Attributes
    ----------
    kind : {"constant", "linear-decay", "step"}
    start : int
        ``linear-decay``: the epochs at the full rate before the decay starts (``S``).
    every : int
        ``step``: epochs between two multiplications (``K``).
    factor : float
        ``step``: the multiplier (``F``).
    """

    kind: str = "constant"
    start: int = 0
    every: int = 1
    factor: float = 1.0

    @property
    def spec(self) -> str:
        """The canonical text form (``constant``, ``linear-decay:5``, ``step:10:0.5``)."""
        if self.kind == "linear-decay":
            return f"linear-decay:{self.start}"
        if self.kind == "step":
            return f"step:{self.every}:{self.factor!r}"
        return "constant"

    @property
    def uses_epochs(self) -> bool:
        """Whether the rates depend on the run's number of epochs (then it may not change on resume)."""
        return self.kind == "linear-decay"

    def check_epochs(self, epochs: int) -> None:
        """``ValueError`` (naming ``lr_schedule``) when the schedule cannot run for ``epochs`` epochs."""
        if self.kind == "linear-decay" and not self.start < epochs:
            raise ValueError(f"lr_schedule {self.spec!r} starts its decay after epoch {self.start}, but the run has "
                             f"{epochs} epoch(s): choose a START_EPOCH below epochs")

    def factor_at(self, epoch: int, epochs: int) -> float:
        """The factor of epoch ``epoch`` (1-based) of ``epochs``."""
        if self.kind == "linear-decay":
            self.check_epochs(epochs)
            return 1.0 if epoch <= self.start else (epochs + 1 - epoch) / (epochs + 1 - self.start)
        if self.kind == "step":
            return self.factor ** ((epoch - 1) // self.every)
        return 1.0

    def lr_at(self, lr: float, epoch: int, epochs: int) -> float:
        """The learning rate of epoch ``epoch``: ``lr`` itself for ``constant`` (bit for bit)."""
        return lr if self.kind == "constant" else lr * self.factor_at(epoch, epochs)


_SCHEDULE_FORMS = "'constant', 'linear-decay:START_EPOCH' or 'step:EVERY:FACTOR'"


def lr_schedule(spec: str | LRSchedule | None) -> LRSchedule:
    """Parse a schedule's text form (``None`` = ``constant``).

    Raises
    ------
    ValueError
        Not one of the forms, ``START_EPOCH`` not an integer >= 0, ``EVERY`` not an integer >= 1,
        ``FACTOR`` not in (0, 1].
    """
    if spec is None:
        return LRSchedule()
    if isinstance(spec, LRSchedule):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"lr_schedule must be a string ({_SCHEDULE_FORMS}), got {type(spec).__name__}")
    parts = spec.strip().split(":")

    def integer(text: str, what: str, minimum: int) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise ValueError(f"lr_schedule {spec!r}: {what} must be an integer >= {minimum}, got {text!r}")
        return value

    if parts == ["constant"]:
        return LRSchedule()
    if parts[0] == "linear-decay" and len(parts) == 2:
        return LRSchedule("linear-decay", start=integer(parts[1], "START_EPOCH", 0))
    if parts[0] == "step" and len(parts) == 3:
        every = integer(parts[1], "EVERY", 1)
        try:
            factor = float(parts[2])
        except ValueError:
            factor = math.nan
        if not (math.isfinite(factor) and 0 < factor <= 1):
            raise ValueError(f"lr_schedule {spec!r}: FACTOR must be a number in (0, 1], got {parts[2]!r}")
        return LRSchedule("step", every=every, factor=factor)
    raise ValueError(f"lr_schedule must be {_SCHEDULE_FORMS}, got {spec!r}")
