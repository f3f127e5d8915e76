"""The classic porting slips, as hypotheses the runner tests on a failing output.

A slip is a wrong convention with a recognisable effect. For each one, :func:`hypotheses` recomputes
what a port *with that slip* would output, from the fixture case's own inputs, with the reference
(e.g. a port that flips kernels computes our convolution with flipped weights; a port that sums
over the batch where SPEC means averages outputs N times our terms and gradients). When a failing
port's output matches a slip's prediction, the runner names the slip and how to fix it
(docs/porting.md explains each convention).

Slips recognised (each applies to the operations listed in its function):

* ``flipped-kernels`` -- true convolution instead of cross-correlation;
* ``last-max-ties`` -- the last maximum of a window instead of the first;
* ``flat-positions`` -- PyTorch-style flat indices into the pre-pool plane instead of row-major
  positions inside the window;
* ``batch-sum`` -- sums over the batch where the terms are batch means (CE over labelled rows);
* ``param-mean`` -- parameter cotangents averaged over the batch where SPEC sums them;
* ``rc-over-sigma2`` -- RC divided by ``sigma^2``; ``rc-pixel-sum`` -- RC summed over pixels;
* ``ce-all-rows`` -- CE averaged over every row, unlabelled ones included;
* ``h-sign`` -- the other sign of the entropy term;
* ``missing-hw`` -- constant templates scored with global *average* pooling without the ``H_L W_L`` factor;
* ``unpinned-dcn`` -- RMM max-sum scores without the pinned constant ``kappa(I)`` (or DCN scores with it);
* ``rmm-corner`` -- an RMM position taken as the stamp's top-left pixel, forgetting the padding offset.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np

from .fixtures import Case
from .reference import ReferenceAdapter
from .spec import flatten_outputs

__all__ = ["Slip", "SLIPS", "hypotheses"]

REF = ReferenceAdapter()

DRMM_OPS = ("bottom_up", "top_down", "render", "sample", "log_joint", "backward", "render_vjp", "objective", "eg_step",
            "backprop_step", "block_step")
RMM_OPS = ("rmm_render", "rmm_log_joint", "rmm_max_sum_scores", "rmm_dcn_scores", "rmm_map_estimate", "rmm_posterior",
           "rmm_e_step", "rmm_m_step")


@dataclasses.dataclass(frozen=True)
class Slip:
    """A named slip: ``predict(case)`` returns the outputs a port with it would give (a list of variants) or []."""

    name: str
    hint: str
    predict: Callable[[Case], list[dict[str, np.ndarray]]]


def _ref(op: str, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    return flatten_outputs(getattr(REF, op)(**inputs))


def _flip(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a)[..., ::-1, ::-1])


# -- flipped kernels ---------------------------------------------------------------------------
def _flipped(case: Case) -> list[dict]:
    op, x = case.op, dict(case.inputs)
    if op in ("conv2d", "conv2d_transpose", "conv2d_vjp", "conv2d_transpose_vjp"):
        x["weight"] = _flip(x["weight"])
        out = _ref(op, x)
        if "grad_weight" in out:
            out["grad_weight"] = _flip(out["grad_weight"])
        return [out]
    if op in DRMM_OPS:
        params = dict(x["params"])
        for k in params:
            if k.startswith("filters_"):
                params[k] = _flip(params[k])
        x["params"] = params
        out = _ref(op, x)
        block = x.get("block", "")
        for k in out:
            leaf = k.split(".")[-1]
            if leaf.startswith("filters_") or (k == "theta" and str(block).startswith("filters_")):
                out[k] = _flip(out[k])
        return [out]
    if op in RMM_OPS:
        rmm = dict(x["rmm"])
        rmm["templates"] = _flip(rmm["templates"])
        x["rmm"] = rmm
        out = _ref(op, x)
        if "templates" in out:
            out["templates"] = _flip(out["templates"])
        return [out]
    return []


# -- positions ---------------------------------------------------------------------------------
def _windows(x: np.ndarray, p: int) -> np.ndarray:
    n, c, h, w = x.shape
    return x.reshape(n, c, h // p, p, w // p, p).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // p, w // p, p * p)


def _last_argmax(x: np.ndarray, p: int) -> np.ndarray:
    win = _windows(x, p)[..., ::-1]
    return (p * p - 1 - np.argmax(win, axis=-1)).astype(np.int64)


def _flat(t: np.ndarray, p: int, width: int) -> np.ndarray:
    n, c, hp, wp = t.shape
    rows = np.arange(hp)[None, None, :, None] * p + t // p
    cols = np.arange(wp)[None, None, None, :] * p + t % p
    return (rows * width + cols).astype(np.int64)


def _bottom_up_variants_last(case: Case) -> list[dict]:
    """Bottom-up outputs with last-maximum positions: pooling relu(u), or pooling u and zeroing off units."""
    net = case.inputs["net"]
    base = {k: v for k, v in case.expected.items()} if case.op == "bottom_up" else _ref(
        "bottom_up", {"net": net, "params": case.inputs["params"], "images": case.inputs["images"]})
    variants = []
    for pool_relu in (True, False):
        out = dict(base)
        for l, layer in enumerate(net["layers"], start=1):
            p = layer["pool"]
            if p == 1:
                continue
            u = base[f"preactivations_{l}"]
            if pool_relu:
                t = _last_argmax(np.maximum(u, 0.0), p)
            else:
                t = np.where(base[f"switches_{l}"], _last_argmax(u, p), 0)
            out[f"positions_{l}"] = t
        variants.append(out)
    return variants


def _last_max(case: Case) -> list[dict]:
    op, x = case.op, case.inputs
    if op == "maxpool2d":
        return [{"values": case.expected["values"], "positions": _last_argmax(x["x"], x["pool"])}]
    if op == "maxpool2d_vjp":
        t = _last_argmax(x["x"], x["pool"])
        return [_ref("unpool2d", {"values": x["grad_out"], "positions": t, "pool": x["pool"]})]
    if op == "bottom_up":
        return _bottom_up_variants_last(case)
    if op == "top_down":
        out = []
        for fw in _bottom_up_variants_last(case):
            lat = {k: v for k, v in fw.items() if k.startswith(("positions_", "switches_"))}
            classes = x.get("classes")
            if classes is None:
                classes = np.argmax(fw["scores"], axis=1)
            r = _ref("render", {"net": x["net"], "params": x["params"], "classes": classes, "latents": lat})
            r["classes"] = np.asarray(classes, dtype=np.int64)
            out.append(r)
        return out
    return []


def _flat_positions(case: Case) -> list[dict]:
    op, x = case.op, case.inputs
    if op == "maxpool2d":
        p = x["pool"]
        return [{"values": case.expected["values"], "positions": _flat(case.expected["positions"], p, x["x"].shape[3])}]
    if op == "bottom_up":
        net = x["net"]
        variants = []
        for all_layers in (False, True):
            out = dict(case.expected)
            for l, layer in enumerate(net["layers"], start=1):
                p = layer["pool"]
                if p == 1 and not all_layers:
                    continue
                width = case.expected[f"preactivations_{l}"].shape[3]
                out[f"positions_{l}"] = _flat(case.expected[f"positions_{l}"], p, width)
            variants.append(out)
        return variants
    return []


# -- scale factors of the objective ------------------------------------------------------------
TERMS = ("ce", "rc", "nn", "h", "balance")


def _single(weights: dict, term: str, **change) -> dict:
    w = {k: (0.0 if k in TERMS else v) for k, v in weights.items()}
    w[term] = 1.0
    w.update(change)
    return w


def _objective_with(case: Case, factors: dict[str, float], h_sign: str | None = None) -> list[dict]:
    """The objective's outputs if term t were ``factors[t]`` times ours (and H had sign ``h_sign``)."""
    x = case.inputs
    weights = x["weights"]
    if h_sign is not None and not weights.get("h", 0) > 0:
        return []
    if all(math.isclose(factors.get(t, 1.0), 1.0) for t in TERMS) and h_sign is None:
        return []
    terms, grads, total = {}, {}, 0.0
    for t in TERMS:
        w = float(weights.get(t, 0.0))
        if not w > 0:
            continue
        change = {"h_sign": h_sign} if (t == "h" and h_sign is not None) else {}
        out = REF.objective(x["net"], x["params"], x["images"], x["labels"], _single(weights, t, **change))
        f = factors.get(t, 1.0)
        terms[t] = f * np.asarray(out["terms"][t])
        total = total + w * terms[t]
        for k, g in out["gradients"].items():
            grads[k] = grads.get(k, 0.0) + w * f * np.asarray(g)
    terms["objective"] = np.asarray(total)
    flat = {f"terms.{k}": np.asarray(v) for k, v in terms.items()}
    flat.update({f"gradients.{k}": np.asarray(v) for k, v in grads.items()})
    return [flat]


def _n_rows(case: Case) -> tuple[int, int]:
    labels = np.asarray(case.inputs["labels"])
    return labels.shape[0], int(np.sum(labels != -1))


def _batch_sum(case: Case) -> list[dict]:
    if case.op == "objective":
        n, nl = _n_rows(case)
        return _objective_with(case, {"ce": nl, "rc": n, "nn": n, "h": n})
    return []


def _param_mean(case: Case) -> list[dict]:
    if case.op in ("backward", "render_vjp"):
        n = np.asarray(case.inputs.get("images", case.inputs.get("classes"))).shape[0]
        return [{k: (v if k == "input" else v / n) for k, v in case.expected.items()}]
    return []


def _rc_over_sigma2(case: Case) -> list[dict]:
    if case.op == "objective":
        return _objective_with(case, {"rc": 1.0 / float(case.inputs["params"]["noise_variance"])})
    return []


def _rc_pixel_sum(case: Case) -> list[dict]:
    if case.op != "objective":
        return []
    n, _ = _n_rows(case)
    d = math.prod(case.inputs["net"]["image_shape"])
    return _objective_with(case, {"rc": d}) + _objective_with(case, {"rc": n * d})


def _ce_all_rows(case: Case) -> list[dict]:
    if case.op != "objective":
        return []
    n, nl = _n_rows(case)
    return _objective_with(case, {"ce": nl / n}) if nl != n else []


def _h_sign(case: Case) -> list[dict]:
    if case.op != "objective":
        return []
    other = "kl_to_prior" if case.inputs["weights"].get("h_sign", "entropy") == "entropy" else "entropy"
    return _objective_with(case, {}, h_sign=other)


# -- constant templates ------------------------------------------------------------------------
def _missing_hw(case: Case) -> list[dict]:
    x = case.inputs
    net = x.get("net")
    if not net or not net.get("constant_templates"):
        return []
    shapes = [tuple(net["image_shape"])]
    c, h, w = shapes[0]
    for layer in net["layers"]:
        k, q, p = layer["kernel"], layer["padding"], layer["pool"]
        h, w = (h + 2 * q - k + 1) // p, (w + 2 * q - k + 1) // p
    hw = h * w
    params = dict(x["params"])
    params["class_templates"] = np.asarray(params["class_templates"]) / hw
    if case.op == "bottom_up":
        return [_ref("bottom_up", {**x, "params": params})]
    if case.op == "backward":
        out = _ref("backward", {**x, "params": params})
        out["class_templates"] = out["class_templates"] / hw
        return [out]
    if case.op == "objective" and not (x["weights"].get("rc", 0) > 0 or x["weights"].get("nn", 0) > 0):
        out = _ref("objective", {**x, "params": params})
        if "gradients.class_templates" in out:
            out["gradients.class_templates"] = out["gradients.class_templates"] / hw
        return [out]
    if case.op == "top_down" and x.get("classes") is None:
        scores = _ref("bottom_up", {"net": net, "params": params, "images": x["images"]})["scores"]
        return [_ref("top_down", {**x, "classes": np.argmax(scores, axis=1)})]
    return []


# -- the shallow model -------------------------------------------------------------------------
def _unpinned(case: Case) -> list[dict]:
    x = case.inputs
    if case.op == "rmm_max_sum_scores":
        return [_ref("rmm_dcn_scores", x)]
    if case.op == "rmm_dcn_scores":
        return [_ref("rmm_max_sum_scores", x)]
    return []


def _rmm_corner(case: Case) -> list[dict]:
    """``rmm_render`` with the stamp's top-left corner at pixel (row, col) instead of (row - q, col - q)."""
    x = case.inputs
    rmm = x["rmm"]
    q = int(rmm.get("padding", 0))
    if case.op != "rmm_render" or q == 0:
        return []
    t = np.asarray(rmm["templates"])
    _, _, c, k, _ = t.shape
    h, w = rmm["image_shape"]
    lat = x["latents"]
    cls = np.asarray(x["classes"])
    out = np.zeros((cls.shape[0], c, h, w))
    for i in range(cls.shape[0]):
        if not lat["switches"][i]:
            continue
        r0, c0 = (int(v) for v in lat["positions"][i])
        stamp = t[cls[i], lat["subtemplates"][i]]
        for di in range(k):
            for dj in range(k):
                if 0 <= r0 + di < h and 0 <= c0 + dj < w:
                    out[i, :, r0 + di, c0 + dj] = stamp[:, di, dj]
    return [{"out": out}]


#: Every slip the runner tests, in the order it reports them.
SLIPS: tuple[Slip, ...] = (
    Slip("flipped-kernels", "conv2d is cross-correlation (no kernel flip): W[o, c, i, j] multiplies x[h + i, w + j]; "
         "use the filters as stored (torch.nn.functional.conv2d and lax.conv_general_dilated already do)", _flipped),
    Slip("last-max-ties", "a tied window's position is its FIRST maximum in row-major order (strict '>' scan); "
         "e.g. jnp.argmax, torch.max_pool2d keep the first", _last_max),
    Slip("flat-positions", "positions are row-major indices INSIDE each p x p window (0..p*p-1), not flat indices into "
         "the pre-pool plane: t = (row % p) * p + (col % p) for PyTorch's index = row * W + col "
         "(docs/porting.md, 'Positions')", _flat_positions),
    Slip("batch-sum", "the terms are batch means (CE over the labelled rows; RC per pixel and row; NN per unit and "
         "row; "         "H and the balance term over rows): divide the sums", _batch_sum),
    Slip("param-mean", "parameter cotangents are SUMMED over the batch (the input cotangent is per example)",
         _param_mean),
    Slip("rc-over-sigma2", "RC = sum ||I - x_hat||^2 / (2 N D), not divided by sigma^2", _rc_over_sigma2),
    Slip("rc-pixel-sum", "RC is a per-pixel mean: divide the squared error by 2 N D", _rc_pixel_sum),
    Slip("ce-all-rows", "CE averages over the LABELLED rows only (label -1 is unlabelled); RC, NN, H and the balance "
         "term use every row", _ce_all_rows),
    Slip("h-sign", "the H term's sign is weights['h_sign']: 'entropy' = H(q), 'kl_to_prior' = log K - H(q)", _h_sign),
    Slip("missing-hw", "constant templates (K, C_L, 1, 1) are broadcast over the H_L x W_L grid and the score SUMS "
         "over "         "it: s_c = H_L W_L * GAP(h^(L)) . v_c + b_c", _missing_hw),
    Slip("unpinned-dcn", "rmm max-sum scores = DCN scores + kappa(I), kappa(I) = -||I||^2 / (2 sigma^2) - (D/2) "
         "ln(2 pi sigma^2) (drmm_ref.rmm.pinned_constant)", _unpinned),
    Slip("rmm-corner", "an RMM position (row, col) puts the template's top-left corner at pixel (row - q, col - q)",
         _rmm_corner),
)


def hypotheses(case: Case) -> list[tuple[Slip, dict[str, np.ndarray]]]:
    """Every (slip, predicted outputs) pair that applies to ``case`` (a slip may give several variants)."""
    out = []
    for slip in SLIPS:
        try:
            variants = slip.predict(case)
        except Exception:  # a slip that cannot be evaluated on this case says nothing about it
            variants = []
        out.extend((slip, v) for v in variants)
    return out
