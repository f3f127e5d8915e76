"""The conformance cases: inputs chosen here, expected outputs computed by the reference adapter.

Every case is built from a fixed seed, in float64, and its expected outputs come from
:class:`~drmm_ref.conformance.reference.ReferenceAdapter` (public ``drmm_ref`` functions only).

**Inputs away from kinks and ties** (unless the case is about them, tag ``ties``). A port that is
right computes the same numbers to rounding, so no case may sit where rounding flips a discrete
decision: every pre-activation ``u`` is at least ``MARGIN * max|u|`` from 0, every pooling window
whose maximum is positive has its two largest entries ``MARGIN * max|u|`` apart, and where a class is
an argmax (top-down without labels, unlabelled rows) the two best scores are that far apart. RMM
MAP cases have the same margins on their max-sum terms. A draw that misses a margin is replaced by
the next seed (deterministically), so the cases are reproducible. Input arrays are rounded to
multiples of powers of two (about 10 significant bits): they are exactly what a port reads, early
layers are then computed exactly in float64, and the files compress.

**Tie cases** (``ties``) use small integer-valued inputs, so windows hold several equal maxima and
pre-activations are exactly 0: they test the first-maximum and ``relu'(0) = 0`` conventions.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import numpy as np

from .. import drmm as D
from .. import rmm as R
from .fixtures import Case
from .spec import flatten_outputs
from .reference import ReferenceAdapter, from_latents, from_params, from_rmm, to_params

__all__ = ["NETS", "MARGIN", "build_group", "GROUPS", "quantise"]

#: Relative distance from every kink and tie (see the module docstring).
MARGIN = 1e-7

#: Tolerances: ``|actual - expected| <= atol + rtol * max|expected|`` per output.
TOL = {"exact": {"rtol": 1e-12, "atol": 0.0}, "default": {"rtol": 1e-10, "atol": 1e-300},
       "step": {"rtol": 1e-9, "atol": 1e-300}, "cg": {"rtol": 1e-7, "atol": 1e-300}}

REF = ReferenceAdapter()


def _odd_nets() -> dict[str, D.Network]:
    L = D.Layer
    return {
        # padding >= kernel, a 2-channel image, non-square pooled grid downstream
        "odd-q-ge-k": D.Network((2, 5, 7), (L(3, 2, 2, 2), L(2, 3, 0, 1)), n_classes=3, name="odd-q-ge-k"),
        # pool 3 after a 1x1 kernel, then a padded 3x3 layer without pooling
        "odd-pool3-k1": D.Network((2, 9, 9), (L(4, 1, 0, 3), L(3, 3, 1, 1)), n_classes=4, name="odd-pool3-k1"),
        # spatially constant templates on a small grid (the Ladder preset's H_L W_L factor)
        "odd-ladder": D.Network((1, 8, 8), (L(2, 3, 1, 2), L(3, 3, 0, 1)), n_classes=3, constant_templates=True,
                                name="odd-ladder"),
        # a single layer with padding < kernel and 3 image channels
        "odd-one-layer": D.Network((3, 6, 6), (L(5, 3, 2, 2),), n_classes=2, name="odd-one-layer"),
    }


#: Networks with fixture cases: the presets of SPEC §6 and a few odd ones.
NETS: dict[str, D.Network] = {name: D.preset(name) for name in ("tiny", "small2", "conv-small", "conv-small-ladder")}
NETS.update(_odd_nets())
BIG = ("small2", "conv-small", "conv-small-ladder")
#: The cases of the large nets (each parameter-sized output costs ~1 MB; the small nets have every case).
BIG_CASES = {
    "small2": ("bottom_up", "top_down/argmax", "render", "log_joint", "sample", "objective/all"),
    "conv-small": ("bottom_up", "top_down/argmax", "log_joint", "sample", "objective/all"),
    "conv-small-ladder": ("bottom_up", "top_down/argmax", "log_joint", "sample"),
}


# -- inputs ------------------------------------------------------------------------------------
def quantise(a: np.ndarray, bits: int = 9) -> np.ndarray:
    """Round to a multiple of ``2^(floor(log2 rms) - bits)``: about ``bits + 1`` significant bits, exact in float64."""
    a = np.asarray(a, dtype=np.float64)
    rms = float(np.sqrt(np.mean(a * a))) if a.size else 0.0
    if rms == 0.0:
        return a.copy()
    step = 2.0 ** (math.floor(math.log2(rms)) - bits)
    return np.round(a / step) * step


def _normal(rng: np.random.Generator, shape, scale: float = 1.0) -> np.ndarray:
    return quantise(rng.standard_normal(shape) * scale)


def make_params(net: D.Network, seed: int, *, biases: bool = True) -> dict[str, np.ndarray]:
    """Seeded, quantised parameters with non-uniform priors (``drmm_ref.init_params``, then rounded)."""
    scale = 0.1 if biases else 0.0
    p = D.init_params(net, seed, bias_scale=scale, class_bias_scale=scale, noise_variance=0.25)
    out = {k: quantise(v) if k.startswith(("filters_", "biases_", "class_templates", "class_biases")) else v
           for k, v in from_params(p).items()}
    k = net.n_classes
    out["class_prior"] = np.arange(1, k + 1, dtype=np.float64) / (k * (k + 1) / 2)
    out["switch_prior"] = np.linspace(0.3, 0.7, net.L) if net.L > 1 else np.array([0.4])
    return out


def make_images(net: D.Network, n: int, rng: np.random.Generator) -> np.ndarray:
    return _normal(rng, (n,) + net.image_shape)


def make_latents(net: D.Network, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = {}
    for l in range(1, net.L + 1):
        shape = (n,) + tuple(net.shapes[l])
        p = net.layers[l - 1].pool
        out[f"positions_{l}"] = rng.integers(0, p * p, size=shape).astype(np.int64)
        out[f"switches_{l}"] = rng.random(shape) < 0.6
    return out


# -- margins -----------------------------------------------------------------------------------
def pool_margin_ok(u: np.ndarray, pool: int, margin: float) -> bool:
    """Every ``|u| >= margin`` and, in windows whose maximum is positive, a top-two gap >= margin."""
    if np.min(np.abs(u)) < margin:
        return False
    if pool == 1:
        return True
    n, c, h, w = u.shape
    win = u.reshape(n, c, h // pool, pool, w // pool, pool).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // pool,
                                                                                               w // pool, pool * pool)
    top = np.sort(win, axis=-1)
    gap = top[..., -1] - top[..., -2]
    return bool(np.all((top[..., -1] <= 0) | (gap >= margin)))


def argmax_margin_ok(scores: np.ndarray, rows: np.ndarray | None, margin: float) -> bool:
    s = scores if rows is None else scores[rows]
    if s.shape[0] == 0 or s.shape[1] < 2:
        return True
    top = np.sort(s, axis=1)
    return bool(np.all(top[:, -1] - top[:, -2] >= margin))


def bottom_up_margin_ok(net: D.Network, params: dict, images: np.ndarray, argmax_rows: Any = None) -> bool:
    """The bottom-up pass of ``images`` is away from every kink and tie (``argmax_rows``: rows whose class is an argmax;
    ``True`` for all rows)."""
    fw = REF.bottom_up(net.to_dict(), params, images)
    for l in range(1, net.L + 1):
        u = fw[f"preactivations_{l}"]
        if not pool_margin_ok(u, net.layers[l - 1].pool, MARGIN * max(float(np.max(np.abs(u))), 1e-300)):
            return False
    if argmax_rows is None or argmax_rows is False:
        return True
    rows = None if argmax_rows is True else np.asarray(argmax_rows)
    s = fw["scores"]
    return argmax_margin_ok(s, rows, MARGIN * max(float(np.max(np.abs(s))), 1.0))


def _first_seed(base: int, ok: Callable[[int], bool], what: str, tries: int = 200) -> int:
    for seed in range(base, base + tries):
        if ok(seed):
            return seed
    raise RuntimeError(f"no seed in [{base}, {base + tries}) gives {what} with the margins of "
                       "drmm_ref.conformance.cases")


# -- case construction -------------------------------------------------------------------------
def make_case(name: str, op: str, inputs: dict[str, Any], *, tol: str = "default", description: str = "",
              tags: tuple[str, ...] = (), zero_default: tuple[str, ...] = (), drop: tuple[str, ...] = ()) -> Case:
    """Run the reference on ``inputs``; the result as a :class:`Case` (outputs starting with ``drop`` left out)."""
    outputs = flatten_outputs(getattr(REF, op)(**inputs))
    expected = {k: v for k, v in outputs.items() if not (drop and k.startswith(drop))}
    for k, v in expected.items():
        if v.dtype.kind == "f" and not np.all(np.isfinite(v)) and op not in ("rmm_posterior",):
            raise ValueError(f"case {name}: output {k} is not finite")
    return Case(name=name, op=op, inputs=inputs, expected=expected, tolerance=dict(TOL[tol]), description=description,
                tags=tuple(tags), zero_default=tuple(zero_default))


# -- primitives --------------------------------------------------------------------------------
def primitive_cases() -> Iterator[Case]:
    rng = np.random.default_rng(1000)
    convs = {"basic": ((2, 3, 7, 5), (4, 3, 3, 3), 1), "q_ge_k": ((1, 2, 4, 5), (3, 2, 2, 2), 3),
             "k1": ((2, 3, 5, 4), (2, 3, 1, 1), 0), "valid_k4": ((1, 1, 6, 8), (2, 1, 4, 4), 0)}
    for tag, (xs, ws, q) in convs.items():
        x, w = _normal(rng, xs), _normal(rng, ws)
        ho, wo = xs[2] + 2 * q - ws[2] + 1, xs[3] + 2 * q - ws[3] + 1
        y = _normal(rng, (xs[0], ws[0], ho, wo))
        gx = _normal(rng, xs)
        yield make_case(f"primitives/conv2d/{tag}", "conv2d", {"x": x, "weight": w, "padding": q}, tol="exact",
                        description=f"x {xs}, weight {ws}, padding {q}")
        yield make_case(f"primitives/conv2d_transpose/{tag}", "conv2d_transpose", {"y": y, "weight": w, "padding": q},
                        tol="exact", description=f"y {y.shape}, weight {ws}, padding {q}")
        yield make_case(f"primitives/conv2d_vjp/{tag}", "conv2d_vjp",
                        {"x": x, "weight": w, "padding": q, "grad_out": y}, tol="exact")
        yield make_case(f"primitives/conv2d_transpose_vjp/{tag}", "conv2d_transpose_vjp",
                        {"y": y, "weight": w, "padding": q, "grad_out": gx}, tol="exact")
    u = _normal(rng, (2, 3, 4, 5))
    u[0, 0, 0, :3] = 0.0
    g = _normal(rng, u.shape)
    yield make_case("primitives/relu/zeros", "relu", {"u": u}, tol="exact", tags=("ties",),
                    description="some entries exactly 0")
    yield make_case("primitives/relu_vjp/zeros", "relu_vjp", {"u": u, "grad_out": g}, tol="exact", tags=("ties",),
                    description="relu'(0) = 0 at the exact zeros")
    for p in (1, 2, 3):
        def ok(seed, p=p):
            x = _normal(np.random.default_rng(seed), (2, 3, 6, 12))
            return pool_margin_ok(x, p, MARGIN * float(np.max(np.abs(x))))
        x = _normal(np.random.default_rng(_first_seed(2000 + 10 * p, ok, "a pooling input")), (2, 3, 6, 12))
        g = _normal(rng, (2, 3, 6 // p, 12 // p))
        yield make_case(f"primitives/maxpool2d/pool{p}", "maxpool2d", {"x": x, "pool": p}, tol="exact",
                        description=f"x (2, 3, 6, 12), pool {p}, distinct maxima")
        yield make_case(f"primitives/maxpool2d_vjp/pool{p}", "maxpool2d_vjp", {"x": x, "pool": p, "grad_out": g},
                        tol="exact")
    for p in (2, 3):
        x = rng.integers(0, 3, size=(2, 2, 6, 12)).astype(np.float64)
        x[0, 0, :p, :p] = -1.0  # a window of equal negative values
        g = _normal(rng, (2, 2, 6 // p, 12 // p))
        yield make_case(f"primitives/maxpool2d/ties_pool{p}", "maxpool2d", {"x": x, "pool": p}, tol="exact",
                        tags=("ties",), description="values in {0, 1, 2}: most windows hold several maxima")
        yield make_case(f"primitives/maxpool2d_vjp/ties_pool{p}", "maxpool2d_vjp", {"x": x, "pool": p, "grad_out": g},
                        tol="exact", tags=("ties",))
    for p in (1, 2, 3):
        v = _normal(rng, (2, 3, 4, 2))
        t = rng.integers(0, p * p, size=v.shape).astype(np.int64)
        yield make_case(f"primitives/unpool2d/pool{p}", "unpool2d", {"values": v, "positions": t, "pool": p},
                        tol="exact")
        x = _normal(rng, (2, 3, 4 * p, 2 * p))
        yield make_case(f"primitives/select2d/pool{p}", "select2d", {"x": x, "positions": t, "pool": p}, tol="exact")
    rows = (("rows", (3, 5), 1, 0.0), ("large", (2, 4), 1, 800.0), ("axis0", (4, 3, 2), 0, 0.0))
    for tag, shape, axis, offset in rows:
        x = _normal(rng, shape, 3.0) + offset
        g = _normal(rng, tuple(d for i, d in enumerate(shape) if i != axis))
        gs = _normal(rng, shape)
        yield make_case(f"primitives/logsumexp/{tag}", "logsumexp", {"x": x, "axis": axis})
        yield make_case(f"primitives/logsumexp_vjp/{tag}", "logsumexp_vjp", {"x": x, "axis": axis, "grad_out": g})
        yield make_case(f"primitives/softmax/{tag}", "softmax", {"x": x, "axis": axis})
        yield make_case(f"primitives/softmax_vjp/{tag}", "softmax_vjp", {"x": x, "axis": axis, "grad_out": gs})


# -- the deep model and learning ---------------------------------------------------------------
WEIGHTS = {
    "ce": {"ce": 1.0, "rc": 0.0, "nn": 0.0, "h": 0.0, "h_sign": "entropy", "balance": 0.0},
    "rc": {"ce": 0.0, "rc": 1.0, "nn": 0.0, "h": 0.0, "h_sign": "entropy", "balance": 0.0},
    "nn": {"ce": 0.0, "rc": 0.0, "nn": 1.0, "h": 0.0, "h_sign": "entropy", "balance": 0.0},
    "h-entropy": {"ce": 0.0, "rc": 0.0, "nn": 0.0, "h": 1.0, "h_sign": "entropy", "balance": 0.0},
    "h-kl": {"ce": 0.0, "rc": 0.0, "nn": 0.0, "h": 1.0, "h_sign": "kl_to_prior", "balance": 0.0},
    "balance": {"ce": 0.0, "rc": 0.0, "nn": 0.0, "h": 0.0, "h_sign": "entropy", "balance": 1.0},
    "all": {"ce": 1.0, "rc": 1.0, "nn": 0.5, "h": 0.2, "h_sign": "entropy", "balance": 0.3},
}
OPTIMIZERS = {"sgd": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
              "adam": {"name": "adam", "lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}}


class NetInputs:
    """Parameters, images and labels of one net, drawn once and shared by its cases."""

    def __init__(self, name: str, net: D.Network, base_seed: int):
        self.name, self.net, self.netd = name, net, net.to_dict()
        self.n = 2 if name in BIG else 3
        n, k = self.n, net.n_classes
        # labels with one unlabelled row (-1); the argmax rows (unlabelled ones) need a score margin
        self.labels = np.array([(i + 1) % k for i in range(n)], dtype=np.int64)
        self.labels[-1] = -1

        def ok(seed):
            params = make_params(net, seed)
            images = make_images(net, n, np.random.default_rng(seed + 1))
            return bottom_up_margin_ok(net, params, images, argmax_rows=True)

        seed = _first_seed(base_seed, ok, f"parameters and images for {name}")
        self.seed = seed
        self.params = make_params(net, seed)
        self.images = make_images(net, n, np.random.default_rng(seed + 1))
        rng = np.random.default_rng(seed + 2)
        self.classes = rng.integers(0, k, size=n).astype(np.int64)
        self.latents = make_latents(net, n, rng)
        self.grad_scores = _normal(rng, (n, k))
        self.grad_renderings = {0: _normal(rng, (n,) + net.image_shape)}
        for l in sorted({1, net.L}):
            self.grad_renderings[l] = _normal(rng, (n,) + tuple(net.shapes[l]))
        self.rng = rng

    def base(self) -> dict[str, Any]:
        return {"net": self.netd, "params": self.params}


def drmm_cases(name: str, net: D.Network, base_seed: int) -> Iterator[Case]:
    ni = NetInputs(name, net, base_seed)
    b = ni.base
    pre = f"{name}/"
    desc = f"{name}, N = {ni.n}, parameter seed {ni.seed}"
    keep = BIG_CASES.get(name)

    def want(case_name: str) -> bool:
        return keep is None or case_name in keep

    if want("bottom_up"):
        big = keep is not None
        yield make_case(pre + "bottom_up", "bottom_up", {**b(), "images": ni.images},
                        description=desc + ("; pre-activations not stored (size)" if big else ""),
                        drop=("preactivations_",) if big else ())
    if want("top_down/argmax"):
        yield make_case(pre + "top_down/argmax", "top_down", {**b(), "images": ni.images, "classes": None},
                        description="classes None: render the argmax class")
    if want("top_down/labels"):
        yield make_case(pre + "top_down/labels", "top_down", {**b(), "images": ni.images, "classes": ni.classes})
    if want("render"):
        yield make_case(pre + "render", "render", {**b(), "classes": ni.classes, "latents": ni.latents},
                        description="random latents (positions random also where the switch is off)")
    if want("log_joint"):
        yield make_case(pre + "log_joint", "log_joint",
                        {**b(), "images": ni.images, "classes": ni.classes, "latents": ni.latents})
    if want("sample"):
        # sample at given latents: the expected images are drmm_ref.sample's own draw (checked = render + noise)
        p = to_params(ni.netd, ni.params)
        s = D.sample(p, ni.n, ni.seed, classes=ni.classes)
        rng = np.random.default_rng(ni.seed)
        lat = D.draw_latents(p, ni.n, rng)
        noise = rng.standard_normal((ni.n,) + net.image_shape)
        case = make_case(pre + "sample", "sample",
                         {**b(), "classes": ni.classes, "latents": from_latents(lat), "noise": noise},
                         description="sample(params, N, seed, classes=...) with its latents and standard-normal noise")
        if not np.array_equal(case.expected["out"], np.asarray(s.images)):
            raise RuntimeError("drmm_ref.sample no longer draws latents then noise from one generator in the "
                               "documented order; update the sample case of drmm_ref.conformance.cases")
        yield case
    if want("backward"):
        yield make_case(pre + "backward", "backward", {**b(), "images": ni.images, "grad_scores": ni.grad_scores},
                        description="parameter cotangents summed over the batch")
    if want("render_vjp"):
        yield make_case(pre + "render_vjp", "render_vjp",
                        {**b(), "classes": ni.classes, "latents": ni.latents, "grad_renderings": ni.grad_renderings},
                        description=f"cotangents on levels {sorted(ni.grad_renderings)}", zero_default=("",))
    for t in WEIGHTS:
        if want(f"objective/{t}"):
            yield make_case(pre + f"objective/{t}", "objective",
                            {**b(), "images": ni.images, "labels": ni.labels, "weights": WEIGHTS[t]},
                            description=f"weights {WEIGHTS[t]}; labels {ni.labels.tolist()} (-1 unlabelled)",
                            zero_default=("gradients.",))
    for op in ("eg_step", "backprop_step"):
        for opt in OPTIMIZERS:
            if not want(f"{op}/{opt}"):
                continue
            inputs = {**b(), "images": ni.images, "labels": ni.labels, "optimizer": OPTIMIZERS[opt]}
            if op == "eg_step":
                inputs["weights"] = WEIGHTS["all"]
            yield make_case(pre + f"{op}/{opt}", op, inputs, tol="step", zero_default=("",),
                            description=f"one {opt} step from a fresh optimiser state")
    fw = REF.bottom_up(ni.netd, ni.params, ni.images)
    lat = {k: v for k, v in fw.items() if k.startswith(("positions_", "switches_"))}
    for block in sorted({"filters_1", f"filters_{net.L}", "class_templates"}):
        if want(f"block_step/{block}"):
            inputs = {**b(), "images": ni.images, "classes": ni.classes, "latents": lat, "block": block,
                      "damping": 0.01}
            k_cg = _unconverged_iterations(inputs, 3)
            yield make_case(pre + f"block_step/{block}", "block_step", {**inputs, "k_cg": k_cg}, tol="cg",
                            description=f"{k_cg} CGLS iteration(s) at the bottom-up latents, damping 0.01")


def _unconverged_iterations(inputs: dict, k_max: int) -> int:
    """The most CGLS iterations (<= k_max) that all still lower RC by more than rounding.

    Once CGLS has converged (a small block reaches its exact minimiser in a few steps), a further
    iteration moves by rounding noise and whether it runs at all depends on an exact zero test: such
    an iterate is no fixture.
    """
    out = REF.block_step(**inputs, k_cg=k_max)
    rc = [float(out["rc_before"])] + [float(v) for v in out["rc_iterates"]]
    k = 0
    while k < min(k_max, len(rc) - 1) and rc[k] - rc[k + 1] > 1e-8 * rc[0]:
        k += 1
    if k == 0:
        raise RuntimeError(f"block step on {inputs['block']}: the first CGLS iterate does not lower RC")
    return k


def tie_cases() -> Iterator[Case]:
    """``tiny`` with zero biases and integer images: tied windows and exact zeros through the network."""
    net = NETS["tiny"]
    rng = np.random.default_rng(3000)
    params = make_params(net, 3000, biases=False)
    params["filters_1"] = np.array([[[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, -1.0]]]])
    images = rng.integers(0, 2, size=(3, 1, 6, 6)).astype(np.float64)
    images[0] = 0.0
    b = {"net": net.to_dict(), "params": params}
    classes = np.array([0, 1, 1], dtype=np.int64)
    yield make_case("tiny/ties/bottom_up", "bottom_up", {**b, "images": images}, tol="exact", tags=("ties",),
                    description="0/1 images, 0/±1 filters: tied windows, u = 0 exactly, an all-zero image")
    yield make_case("tiny/ties/top_down", "top_down", {**b, "images": images, "classes": classes}, tol="exact",
                    tags=("ties",))
    yield make_case("tiny/ties/backward", "backward",
                    {**b, "images": images, "grad_scores": _normal(rng, (3, net.n_classes))}, tol="exact",
                    tags=("ties",))


# -- the shallow model -------------------------------------------------------------------------
RMM_CONFIGS = {
    "global": dict(K=3, M=2, C=1, k=3, image=(8, 8), q=0, pool=None, nuisance=False),
    "padded": dict(K=2, M=1, C=2, k=3, image=(6, 7), q=1, pool=None, nuisance=True),
    "window": dict(K=3, M=1, C=1, k=3, image=(8, 8), q=0, pool=2, nuisance=False),
    "window-padded": dict(K=2, M=2, C=1, k=3, image=(7, 7), q=2, pool=3, nuisance=True),
}


def make_rmm(cfg: dict, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    K, M, C, k = cfg["K"], cfg["M"], cfg["C"], cfg["k"]
    h, w = cfg["image"]
    q = cfg["q"]
    hg, wg = h + 2 * q - k + 1, w + 2 * q - k + 1
    nuisance = None
    if cfg["nuisance"]:
        raw = 0.5 + rng.random((hg, wg))
        nuisance = raw / raw.sum()
    p = R.RMMParams(templates=_normal(rng, (K, M, C, k, k)), class_prior=np.arange(1, K + 1) / (K * (K + 1) / 2),
                    switch_prior=np.linspace(0.55, 0.8, K), sigma2=0.5, image_shape=(h, w), padding=q,
                    nuisance_prior=nuisance, pool=cfg["pool"])
    return from_rmm(p)


def rmm_map_margin_ok(rmm: dict, images: np.ndarray, classes: np.ndarray | None) -> bool:
    """The max-sum MAP of every (example, class, window) is away from ties, read off the exact posterior:
    ``log p(c, m, g, a=1 | I)`` and ``log p(c, m, g, a=0 | I)`` differ from the joint terms by one constant per
    example."""
    post = REF.rmm_posterior(rmm, images, None)
    on = post["responsibilities_on"]
    off = post["responsibilities"] - on
    with np.errstate(divide="ignore"):
        lon, loff = np.log(on), np.log(np.maximum(off, 0.0))
    p = R.RMMParams(**{**rmm, "templates": np.asarray(rmm["templates"]), "image_shape": tuple(rmm["image_shape"])})
    n, K, M, hg, wg = on.shape
    pool = p.pool

    def regions(a):  # (N, K, M, Hg, Wg) -> (N, K, Rh, Rw, M*S)
        if pool is None:
            return a.reshape(n, K, 1, 1, M * hg * wg)
        b = a.reshape(n, K, M, hg // pool, pool, wg // pool, pool).transpose(0, 1, 3, 5, 2, 4, 6)
        return b.reshape(n, K, hg // pool, wg // pool, M * pool * pool)

    ron, roff = regions(lon), regions(loff)
    best_on, best_off = ron.max(axis=-1), roff.max(axis=-1)
    scale = MARGIN * max(1.0, float(np.max(np.abs(np.asarray(REF.rmm_max_sum_scores(rmm, images))))))
    if np.any(np.abs(best_on - best_off) < scale):
        return False
    top = np.sort(ron, axis=-1)
    if np.any((best_on > best_off) & (top[..., -1] - top[..., -2] < scale)):
        return False
    if classes is None:
        s = np.asarray(REF.rmm_max_sum_scores(rmm, images))
        srt = np.sort(s, axis=1)
        if np.any(srt[:, -1] - srt[:, -2] < scale):
            return False
    return True


def rmm_cases() -> Iterator[Case]:
    for i, (tag, cfg) in enumerate(RMM_CONFIGS.items()):
        def ok(seed, cfg=cfg):
            rmm = make_rmm(cfg, seed)
            images = np.asarray(R.sample(R.RMMParams(**{**rmm, "image_shape": tuple(rmm["image_shape"])}), 4, seed)[0])
            return rmm_map_margin_ok(rmm, quantise(images), None)
        seed = _first_seed(4000 + 100 * i, ok, f"an RMM ({tag}) and images")
        rmm = make_rmm(cfg, seed)
        p = R.RMMParams(**{**rmm, "image_shape": tuple(rmm["image_shape"])})
        images, classes, lat = R.sample(p, 4, seed)
        images = quantise(np.asarray(images))
        labels = np.array([0, 1, 1, 0], dtype=np.int64)
        latents = {"subtemplates": np.asarray(lat.subtemplates), "positions": np.asarray(lat.positions),
                   "switches": np.asarray(lat.switches)}
        latents["switches"][0] = 1
        latents["switches"][1] = 0
        pre = f"rmm/{tag}/"
        desc = (f"K={cfg['K']} M={cfg['M']} C={cfg['C']} k={cfg['k']} image {cfg['image']} padding {cfg['q']} "
                f"pool {cfg['pool']} nuisance prior {'given' if cfg['nuisance'] else 'uniform'}")
        yield make_case(pre + "render", "rmm_render", {"rmm": rmm, "classes": np.asarray(classes), "latents": latents},
                        description=desc)
        yield make_case(pre + "log_joint", "rmm_log_joint",
                        {"rmm": rmm, "images": images, "classes": np.asarray(classes), "latents": latents},
                        description=desc)
        yield make_case(pre + "max_sum_scores", "rmm_max_sum_scores", {"rmm": rmm, "images": images},
                        description=desc)
        yield make_case(pre + "dcn_scores", "rmm_dcn_scores", {"rmm": rmm, "images": images}, description=desc)
        yield make_case(pre + "map_estimate", "rmm_map_estimate", {"rmm": rmm, "images": images, "classes": None},
                        description=desc)
        yield make_case(pre + "map_estimate/clamped", "rmm_map_estimate",
                        {"rmm": rmm, "images": images, "classes": labels}, description=desc)
        yield make_case(pre + "posterior", "rmm_posterior", {"rmm": rmm, "images": images, "classes": None},
                        description=desc)
        yield make_case(pre + "posterior/clamped", "rmm_posterior", {"rmm": rmm, "images": images, "classes": labels},
                        description=desc)
        if cfg["pool"] is None:
            for hard in (False, True):
                kind = "hard" if hard else "soft"
                yield make_case(pre + f"e_step/{kind}", "rmm_e_step",
                                {"rmm": rmm, "images": images, "labels": None, "hard": hard}, description=desc)
            post = REF.rmm_posterior(rmm, images, None)
            yield make_case(pre + "m_step", "rmm_m_step",
                            {"rmm": rmm, "images": images, "responsibilities": post["responsibilities"],
                             "responsibilities_on": post["responsibilities_on"]},
                            description=desc + "; responsibilities from the soft E-step")


# -- groups ------------------------------------------------------------------------------------
def _drmm_group(name: str, seed: int):
    def build():
        yield from drmm_cases(name, NETS[name], seed)
        if name == "tiny":
            yield from tie_cases()
    return build


#: Fixture groups (one file each) and their case builders.
GROUPS: dict[str, Callable[[], Iterator[Case]]] = {"primitives": primitive_cases, "rmm": rmm_cases}
for _i, _name in enumerate(NETS):
    GROUPS[f"drmm-{_name}"] = _drmm_group(_name, 100 * (_i + 1))


def build_group(group: str) -> list[Case]:
    """Every case of one fixture group, in a fixed order."""
    if group not in GROUPS:
        raise ValueError(f"unknown fixture group {group!r}; choose from {sorted(GROUPS)}")
    cases = list(GROUPS[group]())
    for c in cases:
        c.group = group
    return cases
