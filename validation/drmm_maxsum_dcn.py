"""Claim ``drmm-maxsum-dcn`` (SPEC §2, D1): max-sum inference in the DRMM is the DCN forward.

With zero biases, for every image I and class c,

    <mu_c, h^(L)(I)> = <mu_{c,g*}, I> <= max_g <mu_{c,g}, I>          (g* = the bottom-up latents)

with equality when every partial rendering is non-negative (``mu >= 0``, ``W^(2..L) >= 0``;
``W^(1)`` and the image signed). Both sides are computed independently: the left by
``drmm_ref.bottom_up`` (conv -> ReLU -> max-pool), the right by enumerating every latent
configuration of every unit (``drmm_ref.drmm.enumerate``, an oracle for tiny nets), on the
``tiny`` preset and on random tiny nets (at most 2^16 configurations per class, SPEC §6).

Measured:

1. under D1's condition: the worst relative error ``|dcn - bf| / (||I|| max_g ||mu_{c,g}||)``
   (Cauchy-Schwarz scale) against the float64 identity tolerance — must pass;
2. unconstrained (every array signed, zero biases): the fraction of (image, class) cases where
   the DCN falls short of the brute-force maximum and the size of the shortfall (a measurement),
   and the number of cases *above* the maximum (must be zero: that would be a bug);
3. on ``tiny`` under the condition, with data sampled from the model (sigma = 0.3 x the RMS pixel
   of the renderings): agreement between the full-log-joint MAP class ``argmax_c max_g ln p(I, c, g)``
   and the DCN class as the image is scaled by an amplitude alpha, and the accuracy against the
   true class (alpha = 1) of the DCN, the full MAP, and the marginal ``argmax_c ln p(I, c)`` (the
   Bayes decision proper); plus a cross-check that ``drmm_ref.log_joint`` at the enumerated MAP
   configuration equals the enumerated value, and that ``max_g ln p >= ln p(I, c, g*)``;
4. at real size (``conv-small``, zero biases), where enumeration is impossible: unit-wise optimality
   of the bottom-up configuration — no single unit's (t, a) change raises ``<mu_{c,g}, I>`` — must
   hold under D1's condition; unconstrained, the fraction of improvable units is measured.
"""

from __future__ import annotations

import numpy as np

from drmm_ref import backend
from drmm_ref import drmm as D
from drmm_ref.drmm.enumerate import brute_force_scores, enumerate_renderings, random_tiny_network
from drmm_ref.numerics import identity_tolerance

from ._claim import Claim, Result, run_claim

CLAIM = Claim(
    id="drmm-maxsum-dcn",
    kind="identity",
    paper_ref="Patel et al. 2016 §2.2 (max-sum inference in the DRMM = DCN forward); SPEC §2, D1",
    statement="With zero biases the DCN score <mu_c, h^(L)(I)> equals max_g <mu_{c,g}, I> (brute force over every "
    "latent configuration) when all partial renderings are non-negative, and never exceeds it otherwise.",
    assumptions=(
        "float64; tiny preset and random tiny nets (<= 2^16 latent configurations per class, SPEC §6)",
        "D1 condition: |N(0,s^2)| filters above layer 1 and templates, signed layer-1 filters, zero biases",
        "images standard normal (signed) and sampled from the model",
        "relative error scale ||I|| max_g ||mu_{c,g}|| (Cauchy-Schwarz bound on both sides)",
    ),
)

AMPLITUDES = (0.25, 0.5, 1.0, 2.0, 4.0, 16.0, 64.0)


def _compare(params, images):
    """``(dcn - bf) / (||I|| max_g ||mu_{c,g}||)`` for every (image, class), shape (N, K)."""
    enum = enumerate_renderings(params)
    bf = backend.to_numpy(brute_force_scores(params, images, enum)["maxsum"])
    dcn = backend.to_numpy(D.bottom_up(params, images).scores)
    norms = np.sqrt(np.max(backend.to_numpy(enum.sq_norms), axis=1))  # (K,)
    inorm = np.linalg.norm(backend.to_numpy(images).reshape(images.shape[0], -1), axis=1)  # (N,)
    scale = np.maximum(inorm[:, None] * norms[None, :], np.finfo(np.float64).tiny)
    return (dcn - bf) / scale


def _models(rng, count, d1, xp):
    """``count`` random parameter sets: every third on the tiny preset, the others on random tiny nets."""
    for i in range(count):
        net = D.preset("tiny") if i % 3 == 0 else random_tiny_network(rng)
        params = D.init_params(net, rng, d1_condition=d1, xp=xp)
        yield params


def _images(params, rng, n, xp):
    gauss = backend.asarray(rng.standard_normal((n,) + params.net.image_shape), xp=xp)
    sampled = D.sample(params, n, rng).images
    return xp.concat([gauss, sampled], axis=0)


def _coordinate_optimality(d1: bool, n: int, rng, xp, tol: float) -> dict:
    """conv-small, zero biases: can changing one unit's (t, a) raise <mu_{c,g}, I> above the DCN's g*?

    With every other latent fixed, ``<mu_{c,g}, I> = sum_j z_j a_j u_j[t_j]`` over the units of any
    one layer l (``z^(l)`` from ``top_down``, ``u^(l)`` from ``bottom_up``), so unit j's best option
    scores ``max(0, max_t z_j u_j[t])``. Counts units whose best option beats the DCN's by more
    than the identity tolerance; under D1's condition there must be none. Unit-wise optimality is
    necessary for the maximum, not sufficient: the global statement is the brute-force part.
    """
    params = D.init_params(D.preset("conv-small"), rng, d1_condition=d1, xp=xp)
    images = backend.asarray(rng.standard_normal((n,) + params.net.image_shape), xp=xp)
    fw = D.bottom_up(params, images)
    checked = improvable = 0
    worst = 0.0
    for c in range(params.net.n_classes):
        rend = D.top_down(params, fw.latents, c)
        for l, layer in enumerate(params.net.layers, start=1):
            p = layer.pool
            z = backend.to_numpy(rend.renderings[l])
            u = backend.to_numpy(fw.preactivations[l - 1])
            nn, cc, hh, ww = z.shape
            win = u.reshape(nn, cc, hh, p, ww, p).transpose(0, 1, 2, 4, 3, 5).reshape(nn, cc, hh, ww, p * p)
            t = backend.to_numpy(fw.latents.positions[l - 1])
            a = backend.to_numpy(fw.latents.switches[l - 1])
            current = z * a * np.take_along_axis(win, t[..., None], axis=-1)[..., 0]
            best = np.maximum(0.0, np.max(z[..., None] * win, axis=-1))
            scale = np.abs(z) * np.max(np.abs(win), axis=-1)
            gain = best - current
            improvable += int(np.sum(gain > tol * np.maximum(scale, np.finfo(np.float64).tiny)))
            checked += gain.size
            worst = max(worst, float(np.max(gain / np.maximum(scale, np.finfo(np.float64).tiny))))
    return {"images": n, "classes": params.net.n_classes, "units_checked": checked, "units_improvable": improvable,
            "fraction_improvable": improvable / checked, "max_relative_gain": worst}


def run(args) -> Result:
    quick = args.mode == "quick"
    xp = backend.resolve_namespace(args.backend)
    rng = np.random.default_rng(args.seed)
    tol = identity_tolerance("float64")
    n_models, n_img = (24, 12) if quick else (150, 40)

    # 1. Under D1's condition: equality.
    errs, cases = [], 0
    for params in _models(rng, n_models, True, xp):
        rel = _compare(params, _images(params, rng, n_img, xp))
        errs.append(float(np.max(np.abs(rel))))
        cases += rel.size
    worst = max(errs)
    cond = {"models": n_models, "cases": cases, "max_relative_error": worst, "tolerance": tol,
            "passed": worst <= tol}

    # 2. Unconstrained: shortfall measured, excess forbidden.
    rels = []
    for params in _models(rng, n_models, False, xp):
        rels.append(_compare(params, _images(params, rng, n_img, xp)).ravel())
    rel = np.concatenate(rels)
    short = rel < -tol
    above = rel > tol
    unc = {"models": n_models, "cases": int(rel.size), "short_fraction": float(np.mean(short)),
           "shortfall_relative_median": float(np.median(-rel[short])) if short.any() else 0.0,
           "shortfall_relative_max": float(np.max(-rel[short])) if short.any() else 0.0,
           "above_count": int(np.sum(above)), "max_excess_relative": float(max(0.0, np.max(rel))),
           "passed": not above.any()}

    # 3. Amplitude agreement and accuracy on tiny data sampled from the model.
    n_amp_models, n_data = (4, 150) if quick else (20, 500)
    agree = {a: [] for a in AMPLITUDES}
    acc = {"dcn": [], "full_map": [], "marginal_bayes": []}
    lj_err, lj_bound_violations = 0.0, 0
    for m in range(n_amp_models):
        params = D.init_params(D.preset("tiny"), rng, d1_condition=True, xp=xp)
        enum = enumerate_renderings(params)
        rms = float(np.sqrt(np.mean(backend.to_numpy(enum.sq_norms)) / params.net.n_pixels))
        params = params.replace(noise_variance=(0.3 * rms) ** 2)
        data = D.sample(params, n_data, rng)
        truth = backend.to_numpy(data.classes)
        for a in AMPLITUDES:
            images = a * data.images
            bf = brute_force_scores(params, images, enum)
            fw = D.bottom_up(params, images)
            map_cls = np.argmax(backend.to_numpy(bf["map"]), axis=1)
            dcn_cls = backend.to_numpy(fw.classes)
            agree[a].append(float(np.mean(map_cls == dcn_cls)))
            if a == 1.0:
                acc["dcn"].append(float(np.mean(dcn_cls == truth)))
                acc["full_map"].append(float(np.mean(map_cls == truth)))
                acc["marginal_bayes"].append(float(np.mean(np.argmax(backend.to_numpy(bf["marginal"]), 1) == truth)))
                # log_joint cross-checks: at the enumerated MAP configuration, and the DCN's configuration.
                for c in range(params.net.n_classes):
                    idx = bf["map_argmax"][:, c]
                    lj = backend.to_numpy(D.log_joint(params, images, c, enum.latents.take(idx)))
                    ref = backend.to_numpy(bf["map"][:, c])
                    lj_err = max(lj_err, float(np.max(np.abs(lj - ref) / np.maximum(1.0, np.abs(ref)))))
                    at_dcn = backend.to_numpy(D.log_joint(params, images, c, fw.latents))
                    lj_bound_violations += int(np.sum(at_dcn > ref + 1e-9 * np.maximum(1.0, np.abs(ref))))
    curve = [float(np.mean(agree[a])) for a in AMPLITUDES]
    amp = {"amplitudes": list(AMPLITUDES), "agreement_dcn_vs_full_map": curve, "models": n_amp_models,
           "images_per_model": n_data, "sigma_over_rms": 0.3}
    accuracy = {k: float(np.mean(v)) for k, v in acc.items()}
    crosscheck = {"log_joint_vs_enumeration_max_relative_error": lj_err,
                  "dcn_config_above_enumerated_map": lj_bound_violations,
                  "passed": lj_err <= 1e-10 and lj_bound_violations == 0}

    # 4. Real size (conv-small): the bottom-up configuration is optimal unit by unit.
    n_cs = 4 if quick else 16
    coord = {"d1_condition": _coordinate_optimality(True, n_cs, rng, xp, tol),
             "unconstrained": _coordinate_optimality(False, n_cs, rng, xp, tol)}
    coord["passed"] = coord["d1_condition"]["units_improvable"] == 0
    ok = cond["passed"] and unc["passed"] and crosscheck["passed"] and coord["passed"]
    summary = (f"under D1's condition max rel. error {worst:.1e} (tol {tol:.0e}, {cases} cases); unconstrained: DCN "
               f"short in {unc['short_fraction']:.1%} of {unc['cases']} "
               f"(median {unc['shortfall_relative_median']:.2g}), "
               f"{unc['above_count']} above; DCN/full-MAP agreement {curve[0]:.2f}@x{AMPLITUDES[0]:g} -> "
               f"{curve[-1]:.3f}@x{AMPLITUDES[-1]:g}; accuracy DCN {accuracy['dcn']:.2f}, "
               f"MAP {accuracy['full_map']:.2f}, Bayes {accuracy['marginal_bayes']:.2f}; "
               f"conv-small unit-wise optimal under D1 "
               f"({coord['d1_condition']['units_improvable']} of {coord['d1_condition']['units_checked']} improvable; "
               f"unconstrained {coord['unconstrained']['fraction_improvable']:.1%})")
    return Result(
        status="pass" if ok else "fail",
        measured={"d1_condition": cond, "unconstrained": unc, "amplitude": amp, "accuracy_at_amplitude_1": accuracy,
                  "log_joint_crosscheck": crosscheck, "conv_small_unitwise_optimality": coord},
        tolerance={"identity_relative": tol, "log_joint_relative": 1e-10},
        summary=summary,
        dtype="float64",
    )


def main(argv=None):
    return run_claim(CLAIM, run, argv)


if __name__ == "__main__":
    import sys

    from ._claim import exit_code

    sys.exit(exit_code(main()))
