"""Claim ``adjoint-identities`` (SPEC §0): every linear primitive has an exact adjoint.

For each linear map ``A`` among the primitives and its claimed adjoint ``A^T``, over random
shapes, paddings and both float dtypes, measure the SPEC §0 relative error of
``<A x, y> = <x, A^T y>`` and compare the worst case with the dtype's identity tolerance.

Operators (the weight-side maps are what the DRMM's rendering and learning use):

* ``conv2d`` in ``x``            <-> ``conv2d_transpose``
* ``conv2d`` in ``weight``       <-> ``conv2d_vjp_weight``
* ``conv2d_transpose`` in ``y``  <-> ``conv2d``
* ``conv2d_transpose`` in ``weight`` <-> ``conv2d_transpose_vjp_weight``
* ``unpool2d`` in ``values``     <-> ``select2d`` (= the max-pool VJP's adjoint)
* ``relu`` Jacobian at ``u`` (mask ``u > 0``) <-> ``relu_vjp``
"""

from __future__ import annotations

import numpy as np

from drmm_ref import backend
from drmm_ref import primitives as P
from drmm_ref.numerics import adjoint_relative_error, identity_tolerance

from ._claim import Claim, Result, run_claim

CLAIM = Claim(
    id="adjoint-identities",
    kind="identity",
    paper_ref="SPEC §0 (conventions); Patel et al. 2016 §2.2 (rendering = transposed convolution)",
    statement="Every linear primitive and its adjoint satisfy <A x, y> = <x, A^T y> to the dtype's "
    "identity tolerance (float64 1e-12, float32 1e-5 relative, SPEC §0 measure).",
    assumptions=(
        "random shapes: batch 1-3, channels 1-4, kernel 1-5, padding 0..k+1, pool 1-3, sides up to 12",
        "entries standard normal, drawn on the host from the recorded seed",
    ),
)


def _case(rng: np.random.Generator):
    n, c, o = (int(v) for v in rng.integers(1, [4, 5, 5]))
    k = int(rng.integers(1, 6))
    q = int(rng.integers(0, k + 2))
    p = int(rng.integers(1, 4))
    smallest = max(1, k - 2 * q)  # the input side must leave an output side >= 1
    h, w = (int(v) for v in rng.integers(smallest, smallest + 9, size=2))
    return n, c, o, k, q, p, h, w


def _operators():
    """(name, make(rng, xp, dtype) -> (x, Ax, y, ATy))."""

    def arrays(rng, xp, dtype, *shapes):
        return [backend.asarray(rng.standard_normal(s).astype(dtype), xp=xp) for s in shapes]

    def conv_x(rng, xp, dtype):
        n, c, o, k, q, _, h, w = _case(rng)
        x, wt = arrays(rng, xp, dtype, (n, c, h, w), (o, c, k, k))
        ax = P.conv2d(x, wt, q)
        (y,) = arrays(rng, xp, dtype, tuple(ax.shape))
        return x, ax, y, P.conv2d_transpose(y, wt, q)

    def conv_w(rng, xp, dtype):
        n, c, o, k, q, _, h, w = _case(rng)
        x, wt = arrays(rng, xp, dtype, (n, c, h, w), (o, c, k, k))
        ax = P.conv2d(x, wt, q)
        (y,) = arrays(rng, xp, dtype, tuple(ax.shape))
        # The map is W -> conv2d(x, W); batch-sum both sides by treating W as a batch of one.
        aty = P.conv2d_vjp_weight(y, x, q)
        return (xp.reshape(wt, (1, -1)), xp.reshape(ax, (1, -1)), xp.reshape(y, (1, -1)), xp.reshape(aty, (1, -1)))

    def convt_y(rng, xp, dtype):
        n, c, o, k, q, _, h, w = _case(rng)
        y_in, wt = arrays(rng, xp, dtype, (n, o, h + 2 * q - k + 1, w + 2 * q - k + 1), (o, c, k, k))
        ax = P.conv2d_transpose(y_in, wt, q)
        (g,) = arrays(rng, xp, dtype, tuple(ax.shape))
        return y_in, ax, g, P.conv2d_transpose_vjp_input(g, wt, q)

    def convt_w(rng, xp, dtype):
        n, c, o, k, q, _, h, w = _case(rng)
        y_in, wt = arrays(rng, xp, dtype, (n, o, h + 2 * q - k + 1, w + 2 * q - k + 1), (o, c, k, k))
        ax = P.conv2d_transpose(y_in, wt, q)
        (g,) = arrays(rng, xp, dtype, tuple(ax.shape))
        aty = P.conv2d_transpose_vjp_weight(g, y_in, q)
        return (xp.reshape(wt, (1, -1)), xp.reshape(ax, (1, -1)), xp.reshape(g, (1, -1)), xp.reshape(aty, (1, -1)))

    def unpool(rng, xp, dtype):
        n, c, _, _, _, p, h, w = _case(rng)
        hp, wp = max(1, h // p), max(1, w // p)
        (v,) = arrays(rng, xp, dtype, (n, c, hp, wp))
        t = backend.asarray(rng.integers(0, p * p, size=(n, c, hp, wp)), xp=xp)
        ax = P.unpool2d(v, t, p)
        (y,) = arrays(rng, xp, dtype, tuple(ax.shape))
        return v, ax, y, P.select2d(y, t, p)

    def relu_jac(rng, xp, dtype):
        n, c, _, _, _, _, h, w = _case(rng)
        u, x, y = arrays(rng, xp, dtype, (n, c, h, w), (n, c, h, w), (n, c, h, w))
        zero = xp.zeros((), dtype=x.dtype)
        ax = xp.where(u > 0, x, zero)  # the Jacobian of relu at u applied to x
        return x, ax, y, P.relu_vjp(y, u)

    return [("conv2d[x] <-> conv2d_transpose", conv_x), ("conv2d[weight] <-> conv2d_vjp_weight", conv_w),
            ("conv2d_transpose[y] <-> conv2d", convt_y),
            ("conv2d_transpose[weight] <-> conv2d_transpose_vjp_weight", convt_w),
            ("unpool2d <-> select2d", unpool), ("relu Jacobian <-> relu_vjp", relu_jac)]


def run(args) -> Result:
    trials = 300 if args.mode == "quick" else 3000
    xp = backend.resolve_namespace(args.backend)
    rng = np.random.default_rng(args.seed)
    measured, ok = {}, True
    for dtype in ("float64", "float32"):
        tol = identity_tolerance(dtype)
        for name, make in _operators():
            errs = []
            for _ in range(trials):
                x, ax, y, aty = make(rng, xp, dtype)
                errs.append(adjoint_relative_error(ax, y, x, aty))
            worst = float(max(errs))
            measured[f"{dtype} {name}"] = {"worst_relative_error": worst, "tolerance": tol, "trials": trials,
                                           "passed": worst <= tol}
            ok &= worst <= tol
    worst64 = max(v["worst_relative_error"] for k, v in measured.items() if k.startswith("float64"))
    worst32 = max(v["worst_relative_error"] for k, v in measured.items() if k.startswith("float32"))
    return Result(
        status="pass" if ok else "fail",
        measured=measured,
        tolerance={"float64": identity_tolerance("float64"), "float32": identity_tolerance("float32")},
        summary=f"worst relative error float64 {worst64:.1e} (tol 1e-12), float32 {worst32:.1e} (tol 1e-5); "
        f"{len(_operators())} operators x {trials} random cases per dtype",
        dtype="float64 and float32",
    )


def main(argv=None):
    return run_claim(CLAIM, run, argv)


if __name__ == "__main__":
    import sys

    from ._claim import exit_code

    sys.exit(exit_code(main()))
