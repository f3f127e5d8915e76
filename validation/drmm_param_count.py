"""Claim ``drmm-param-count`` (SPEC §2, D3): a DRMM's parameters against the shallow mixture it factorises.

Filters and templates: ``sum_l C_l C_{l-1} k_l^2 + K C_L H_L W_L`` (``K C_L`` for the Ladder-style
spatially constant templates); biases, priors and sigma^2 counted apart. The formula is evaluated
here from each preset's layer list (sizes propagated with ``H_l = (H_{l-1} + 2 q_l - k_l + 1) / p_l``)
and compared with the sizes of the arrays ``drmm_ref.init_params`` actually allocates. A shallow
mixture with one template per (c, g) needs ``D K prod_l |G^(l)|`` numbers, ``|G^(l)| = (2 p_l^2)^(C_l H_l W_l)``
(distinct renderings: ``(p_l^2 + 1)^(C_l H_l W_l)``), printed as log10. On ``tiny``,
``K prod_l |G^(l)|`` must equal the number of (c, g) pairs the brute-force oracle enumerates, and
``prod_l (p_l^2 + 1)^units`` the number of distinct canonical configurations it finds.
"""

from __future__ import annotations

import math

from drmm_ref import backend
from drmm_ref import drmm as D
from drmm_ref.drmm.enumerate import enumerate_renderings

from ._claim import Claim, Result, run_claim

CLAIM = Claim(
    id="drmm-param-count",
    kind="identity",
    paper_ref="Patel et al. 2016 §2.2 (the DRMM as an exponentially large factorised mixture); SPEC §2, D3",
    statement="The D3 parameter-count formula equals the size of the library's filter and template arrays for "
    "every preset, and K prod_l |G^(l)| equals the number of (c, g) pairs enumerated on the tiny net.",
    assumptions=("presets of SPEC §6: tiny, small2, conv-small, conv-small-ladder",
                 "biases, priors and the noise variance are counted apart"),
)


def _formula(net) -> dict:
    """Sizes from the layer list alone (not from the library's derived shapes)."""
    c, h, w = net.image_shape
    filt, log10_g, log10_distinct, per_layer = 0, 0.0, 0.0, []
    for ly in net.layers:
        filt += ly.channels * c * ly.kernel ** 2
        h, w = (h + 2 * ly.padding - ly.kernel + 1) // ly.pool, (w + 2 * ly.padding - ly.kernel + 1) // ly.pool
        c = ly.channels
        units = c * h * w
        log10_g += units * math.log10(2 * ly.pool ** 2)
        log10_distinct += units * math.log10(ly.pool ** 2 + 1)
        per_layer.append({"units": units, "log10_G": units * math.log10(2 * ly.pool ** 2)})
    templates = net.n_classes * c * (1 if net.constant_templates else h * w)
    d = math.prod(net.image_shape)
    return {"filters": filt, "templates": templates, "total": filt + templates, "per_layer": per_layer,
            "log10_shallow_parameters": math.log10(d * net.n_classes) + log10_g,
            "log10_shallow_parameters_distinct": math.log10(d * net.n_classes) + log10_distinct,
            "log10_configurations_per_class": log10_g}


def run(args) -> Result:
    xp = backend.resolve_namespace(args.backend)
    measured, ok = {}, True
    for name in D.PRESETS:
        net = D.preset(name)
        params = D.init_params(net, args.seed, xp=xp)
        actual_filters = sum(math.prod(w.shape) for w in params.filters)
        actual_templates = math.prod(params.class_templates.shape)
        f = _formula(net)
        apart = {"biases": sum(math.prod(b.shape) for b in params.biases) + math.prod(params.class_biases.shape),
                 "priors": math.prod(params.class_prior.shape) + math.prod(params.switch_prior.shape),
                 "noise_variance": 1}
        match = f["total"] == actual_filters + actual_templates and f["filters"] == actual_filters
        measured[name] = {"formula": f["total"], "actual_arrays": actual_filters + actual_templates,
                          "filters": actual_filters, "templates": actual_templates, "counted_apart": apart,
                          "log10_shallow_parameters": round(f["log10_shallow_parameters"], 3),
                          "log10_shallow_parameters_distinct": round(f["log10_shallow_parameters_distinct"], 3),
                          "log10_configurations_per_class": round(f["log10_configurations_per_class"], 3),
                          "passed": match}
        ok &= match
    tiny = D.preset("tiny")
    enum = enumerate_renderings(D.init_params(tiny, args.seed, xp=xp))
    expected = tiny.n_classes * math.prod((2 * ly.pool ** 2) ** (tiny.units(l)) for l, ly in enumerate(tiny.layers, 1))
    distinct = math.prod((ly.pool ** 2 + 1) ** tiny.units(l) for l, ly in enumerate(tiny.layers, 1))
    canon = enum.n_canonical()
    measured["tiny_enumeration"] = {"K_prod_G": expected, "enumerated_pairs": enum.n_pairs,
                                    "distinct_formula": distinct, "distinct_enumerated": canon,
                                    "passed": expected == enum.n_pairs and distinct == canon}
    ok &= measured["tiny_enumeration"]["passed"]
    cs = measured["conv-small"]
    summary = (f"formula = arrays for {len(D.PRESETS)} presets (conv-small {cs['formula']:,} vs "
               f"{cs['actual_arrays']:,}; shallow mixture 10^{cs['log10_shallow_parameters']:.0f}); tiny: "
               f"K prod|G| {expected:,} = {enum.n_pairs:,} enumerated, distinct {distinct:,} = {canon:,}")
    return Result(status="pass" if ok else "fail", measured=measured, tolerance="exact integer equality",
                  summary=summary, dtype="n/a (counts)")


def main(argv=None):
    return run_claim(CLAIM, run, argv)


if __name__ == "__main__":
    import sys

    from ._claim import exit_code

    sys.exit(exit_code(main()))
