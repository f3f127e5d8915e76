"""Claim ``rmm-maxsum-dcn`` (SPEC §1, R1): max-sum inference in the RMM is conv -> ReLU -> max-pool, exactly.

Over many random RMMs (M = 1 and M > 1 sub-templates, uniform and non-uniform nuisance priors with
some zero entries, per-class switch priors, valid and zero-padded positions, global and window
form) and images (sampled from the model and pure noise), three computations of the class scores
``max_{m,g,a} ln p(I, c, m, g, a)`` are compared:

1. **brute force** (this file, host NumPy, float64): render every ``(c, m, g, a)`` by placing the
   template into a blank canvas with explicit slicing, evaluate the Gaussian log joint
   ``-||I - a T_g mu||^2 / (2 sigma^2) - ...`` and take the max — no convolution, no expanded square;
2. **DCN** (:func:`drmm_ref.rmm.dcn_scores` of :func:`drmm_ref.rmm.to_dcn`, built from the primitives)
   plus the pinned constant ``kappa(I) = -||I||^2/(2 sigma^2) - (D/2) ln(2 pi sigma^2)``;
3. **max-sum MAP** (:func:`drmm_ref.rmm.map_estimate`), whose configuration is re-scored by
   :func:`drmm_ref.rmm.log_joint` (rendering through ``conv2d_transpose``).

Measured: the worst score difference (relative to ``max(1, |score|, |kappa|)``) between 1 and 2
and between 1 and 3, and the class agreement of the three on the examples (per window) whose
brute-force top-two margin exceeds the tolerance; ties are counted apart. The same comparison in
float32 (DCN in float32 against the float64 brute force) is reported with the float32 tolerance.
"""

from __future__ import annotations

import math

import numpy as np

from drmm_ref import backend
from drmm_ref import rmm
from drmm_ref.numerics import identity_tolerance

from ._claim import Claim, Result, run_claim

CLAIM = Claim(
    id="rmm-maxsum-dcn",
    kind="identity",
    paper_ref="SPEC §1 R1, §4; Patel et al. 2016 §2.1 (max-sum RMM inference = conv -> ReLU -> max-pool)",
    statement="For every RMM, image and class, max_{m,g,a} ln p(I,c,m,g,a) equals the DCN score "
    "(conv with mu/sigma^2, bias -||mu||^2/(2 sigma^2) + ln(pi_on/pi_off) or its clipped-norm map, ReLU, "
    "+ ln pi_g, maxout over m, global max or p x p max-pool, + ln pi_c + ln pi_off - ln M) plus the pinned "
    "constant -||I||^2/(2 sigma^2) - (D/2) ln(2 pi sigma^2), to the identity tolerance; the classes agree "
    "wherever the brute-force margin exceeds it.",
    assumptions=(
        "random models cycling through the 16 groups (M = 1 / M > 1) x (uniform / non-uniform pi_g) x "
        "(valid / padded) x (global / window): K 2-4, M 2-3 when > 1, C 1-2, k 1-4, padding 1..k-1, pool 2-3, "
        "grid up to ~7x7",
        "one model in ten duplicates class 0 into class 1, so exact ties occur and are counted apart",
        "nuisance prior uniform (half the models) or Dirichlet with about 20% zero entries; per-class pi_on in "
        "(0.05, 0.95); sigma^2 log-uniform in [0.1, 2]",
        "images: 6 sampled from the model + 2 standard-normal noise images per model",
        "brute force enumerates every (c, m, g, a) by explicit canvas placement in float64 on the host",
    ),
)


GROUPS = [(multi, nonuniform, padded, window) for multi in (False, True) for nonuniform in (False, True)
          for padded in (False, True) for window in (False, True)]


def random_model(rng: np.random.Generator, xp, dtype: str = "float64", group=None) -> rmm.RMMParams:
    """A random small RMM of one of the 16 case groups of R1 (module docstring).

    ``group = (M > 1, non-uniform pi_g, padded, window form)``; drawn at random when ``None``. One
    model in ten copies class 0 into class 1 (same template, prior and switch prior) to make exact ties.
    """
    multi, nonuniform, padded, window = group if group is not None else GROUPS[int(rng.integers(0, 16))]
    K, C = int(rng.integers(2, 5)), int(rng.integers(1, 3))
    M = int(rng.integers(2, 4)) if multi else 1
    k = int(rng.integers(2, 5)) if padded else int(rng.integers(1, 5))
    q = int(rng.integers(1, k)) if padded else 0
    pool = int(rng.integers(2, 4)) if window else None
    lo = max(1, 2 * q - k + 2)  # smallest grid side that leaves an image side >= 1
    if pool is None:
        hg, wg = (int(v) for v in rng.integers(lo, lo + 6, size=2))
    else:
        hg, wg = (pool * int(v) for v in rng.integers(-(-lo // pool), -(-lo // pool) + 2, size=2))
    H, W = hg - 2 * q + k - 1, wg - 2 * q + k - 1
    put = lambda a: backend.asarray(np.asarray(a, dtype=dtype), xp=xp)  # noqa: E731
    nuisance = None
    if nonuniform:
        prior = rng.dirichlet(np.ones(hg * wg)).reshape(hg, wg)
        prior[rng.random((hg, wg)) < 0.2] = 0.0
        if pool is not None:  # every window keeps some mass
            blocks = prior.reshape(hg // pool, pool, wg // pool, pool)
            blocks[:, 0, :, 0] += (blocks.sum(axis=(1, 3)) == 0) * 0.1
            prior = blocks.reshape(hg, wg)
        if prior.sum() == 0:
            prior[0, 0] = 1.0
        nuisance = put(prior / prior.sum())
    templates = rng.standard_normal((K, M, C, k, k))
    class_prior = rng.dirichlet(np.ones(K) * 2)
    switch = rng.uniform(0.05, 0.95, size=K)
    if rng.random() < 0.1:  # exact ties between classes 0 and 1
        templates[1], switch[1] = templates[0], switch[0]
        class_prior[1] = class_prior[0]
        class_prior /= class_prior.sum()
    return rmm.RMMParams(
        templates=put(templates), class_prior=put(class_prior), switch_prior=put(switch),
        sigma2=float(np.exp(rng.uniform(np.log(0.1), np.log(2.0)))),
        image_shape=(H, W), padding=q, nuisance_prior=nuisance, pool=pool,
    )


def brute_force_log_joint(params: rmm.RMMParams, images: np.ndarray) -> np.ndarray:
    """``ln p(I, c, m, g, a)`` of every configuration: array (N, K, M, Hg, Wg, 2), float64, host.

    Renders each ``(c, m, g)`` by explicit placement into a zero canvas padded by ``q`` (then
    cropped), and evaluates the Gaussian log joint from the residual. Window form: the position
    prior is the conditional ``pi_{g | r}`` of the window holding ``g``.
    """
    t = np.asarray(backend.to_numpy(params.templates), dtype=np.float64)
    K, M, C, k, _ = t.shape
    H, W = params.image_shape
    q = params.padding
    hg, wg = params.grid_shape
    renders = np.zeros((K, M, hg, wg, C, H, W))
    for c in range(K):
        for m in range(M):
            for gy in range(hg):
                for gx in range(wg):
                    canvas = np.zeros((C, H + 2 * q, W + 2 * q))
                    canvas[:, gy : gy + k, gx : gx + k] = t[c, m]
                    renders[c, m, gy, gx] = canvas[:, q : q + H, q : q + W]
    imgs = np.asarray(backend.to_numpy(images), dtype=np.float64)
    s2 = params.sigma2
    D = C * H * W
    resid_on = imgs[:, None, None, None, None] - renders[None]  # (N, K, M, Hg, Wg, C, H, W)
    sq_on = np.sum(resid_on ** 2, axis=(5, 6, 7))
    sq_off = np.broadcast_to(np.sum(imgs ** 2, axis=(1, 2, 3))[:, None, None, None, None], sq_on.shape)
    sq = np.stack([sq_off, sq_on], axis=-1)
    if params.nuisance_prior is None:
        pg = np.full((hg, wg), 1.0 / params.positions_per_model)
    else:
        pg = np.asarray(backend.to_numpy(params.nuisance_prior), dtype=np.float64)
        if params.pool is not None:
            p = params.pool
            b = pg.reshape(hg // p, p, wg // p, p)
            pg = (b / b.sum(axis=(1, 3), keepdims=True)).reshape(hg, wg)
    with np.errstate(divide="ignore"):
        log_pg = np.log(pg)
    pc = np.asarray(backend.to_numpy(params.class_prior), dtype=np.float64)
    pon = np.asarray(backend.to_numpy(params.switch_prior), dtype=np.float64)
    log_pa = np.stack([np.log1p(-pon), np.log(pon)], axis=-1)  # (K, 2)
    return (-sq / (2 * s2) - 0.5 * D * math.log(2 * math.pi * s2) + np.log(pc)[None, :, None, None, None, None]
            - math.log(M) + log_pg[None, None, None, :, :, None] + log_pa[None, :, None, None, None, :])


def brute_force_class_scores(params: rmm.RMMParams, table: np.ndarray) -> np.ndarray:
    """Max over (m, g in the model's region, a): (N, K) global, (N, K, Rh, Rw) window form."""
    n, K, M, hg, wg, _ = table.shape
    if params.pool is None:
        return table.reshape(n, K, -1).max(axis=-1)
    p = params.pool
    b = table.reshape(n, K, M, hg // p, p, wg // p, p, 2)
    return b.max(axis=(2, 4, 6, 7))


def _top_two_margin(scores: np.ndarray) -> np.ndarray:
    s = np.sort(scores, axis=1)
    return s[:, -1, ...] - s[:, -2, ...]


def compare_case(params: rmm.RMMParams, images, dtype_tol: float, params32=None, images32=None) -> dict:
    """Brute force vs DCN vs max-sum MAP on one model; returns the worst differences and agreement counts."""
    table = brute_force_log_joint(params, images)
    brute = brute_force_class_scores(params, table)
    kappa = np.asarray(backend.to_numpy(rmm.pinned_constant(params, images)), dtype=np.float64)
    kappa_b = kappa.reshape((-1,) + (1,) * (brute.ndim - 1))
    scale = np.maximum(np.maximum(1.0, np.abs(brute)), np.abs(kappa_b))
    dcn = np.asarray(backend.to_numpy(rmm.dcn_scores(rmm.to_dcn(params), images)), dtype=np.float64) + kappa_b
    cls_map, lat, map_score = rmm.map_estimate(params, images)
    rescored = np.asarray(backend.to_numpy(rmm.log_joint(params, images, cls_map, lat)), dtype=np.float64)
    best = brute.max(axis=1)
    best_scale = scale.max(axis=1)
    margin = _top_two_margin(brute)
    decided = margin > dtype_tol * best_scale
    cls_brute = brute.argmax(axis=1)
    out = {
        "dcn_vs_brute": float(np.max(np.abs(dcn - brute) / scale)),
        "map_vs_brute": float(np.max(np.abs(rescored - best) / best_scale)),
        "map_score_vs_brute": float(np.max(np.abs(np.asarray(backend.to_numpy(map_score)) - best) / best_scale)),
        "decided": int(decided.sum()),
        "ties": int((~decided).sum()),
        "dcn_class_agree": int(np.sum((np.argmax(dcn, axis=1) == cls_brute) & decided)),
        "map_class_agree": int(np.sum((np.asarray(backend.to_numpy(cls_map)) == cls_brute) & decided)),
    }
    if params32 is not None:
        tol32 = identity_tolerance("float32")
        d32 = np.asarray(backend.to_numpy(rmm.dcn_scores(rmm.to_dcn(params32), images32)), dtype=np.float64)
        k32 = np.asarray(backend.to_numpy(rmm.pinned_constant(params32, images32)), dtype=np.float64)
        d32 = d32 + k32.reshape(kappa_b.shape)
        out["float32_dcn_vs_brute"] = float(np.max(np.abs(d32 - brute) / scale))
        decided32 = margin > tol32 * 10 * best_scale
        out["float32_decided"] = int(decided32.sum())
        out["float32_class_agree"] = int(np.sum((np.argmax(d32, axis=1) == cls_brute) & decided32))
    return out


def run(args) -> Result:
    cases = 160 if args.mode == "quick" else 1600
    xp = backend.resolve_namespace(args.backend)
    rng = np.random.default_rng(args.seed)
    tol = identity_tolerance("float64")
    tol32 = identity_tolerance("float32")
    groups: dict[str, dict] = {}
    for i in range(cases):
        params = random_model(rng, xp, group=GROUPS[i % len(GROUPS)])
        sampled, _, _ = rmm.sample(params, 6, rng)
        noise = backend.asarray(rng.standard_normal((2, params.channels, *params.image_shape)), xp=xp)
        images = xp.concat([sampled, noise], axis=0)
        params32 = params.astype(xp.float32)
        images32 = xp.astype(images, xp.float32)
        res = compare_case(params, images, tol, params32, images32)
        key = (f"M{'=1' if params.num_subtemplates == 1 else '>1'}, "
               f"{'uniform' if params.nuisance_prior is None else 'non-uniform'} pi_g, "
               f"{'valid' if params.padding == 0 else 'padded'}, {'global' if params.pool is None else 'window'}")
        g = groups.setdefault(key, {"cases": 0, "dcn_vs_brute": 0.0, "map_vs_brute": 0.0, "map_score_vs_brute": 0.0,
                                    "decided": 0, "ties": 0, "dcn_class_agree": 0, "map_class_agree": 0,
                                    "float32_dcn_vs_brute": 0.0, "float32_decided": 0, "float32_class_agree": 0})
        g["cases"] += 1
        for name, value in res.items():
            g[name] = max(g[name], value) if isinstance(value, float) else g[name] + value
    worst = max(max(g["dcn_vs_brute"], g["map_vs_brute"], g["map_score_vs_brute"]) for g in groups.values())
    worst32 = max(g["float32_dcn_vs_brute"] for g in groups.values())
    decided = sum(g["decided"] for g in groups.values())
    ties = sum(g["ties"] for g in groups.values())
    agree_dcn = sum(g["dcn_class_agree"] for g in groups.values())
    agree_map = sum(g["map_class_agree"] for g in groups.values())
    dec32 = sum(g["float32_decided"] for g in groups.values())
    agree32 = sum(g["float32_class_agree"] for g in groups.values())
    ok = worst <= tol and agree_dcn == decided and agree_map == decided and worst32 <= tol32 and agree32 == dec32
    measured = {
        "cases": cases,
        "examples_per_case": 8,
        "worst_relative_score_difference_float64": worst,
        "worst_relative_score_difference_float32": worst32,
        "decided_examples": decided,
        "ties": ties,
        "dcn_class_agreement": agree_dcn / max(decided, 1),
        "maxsum_map_class_agreement": agree_map / max(decided, 1),
        "float32_class_agreement": agree32 / max(dec32, 1),
        "groups_covered": len(groups),
        "by_group": dict(sorted(groups.items())),
    }
    return Result(
        status="pass" if ok else "fail",
        measured=measured,
        tolerance={"float64": tol, "float32": tol32, "scale": "max(1, |score|, |kappa(I)|)"},
        summary=f"{cases} models x 8 images, {len(groups)}/16 case groups: worst |DCN+kappa - brute| "
        f"{worst:.1e} (f64, tol {tol:.0e}), {worst32:.1e} (f32, tol {tol32:.0e}); class agreement "
        f"DCN {agree_dcn}/{decided}, max-sum MAP {agree_map}/{decided}; {ties} ties apart",
        dtype="float64 (float32 reported)",
    )


def main(argv=None):
    return run_claim(CLAIM, run, argv)


if __name__ == "__main__":
    import sys

    from ._claim import exit_code

    sys.exit(exit_code(main()))
