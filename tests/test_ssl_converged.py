"""The ssl-mnist-converged claim: its recorded commands build its configurations; its verdict and curves."""

from __future__ import annotations

import shlex

import pytest

from drmm_ref.cli import build_parser, train_config
from validation import ssl_mnist_converged as C


def test_the_recorded_commands_build_exactly_the_claims_configurations():
    cmds = C.full_commands()
    spec = C.FULL
    assert len(cmds) == len(spec["nets"]) * len(spec["seeds"]) * len(spec["rows"]) + len(spec["extras"])
    seen = set()
    for cmd in cmds:
        argv = shlex.split(cmd)
        assert argv[0] == "drmm-ref" and "--threads" in argv  # the thread count is part of a run's numbers
        args = build_parser().parse_args(argv[1:])
        name = args.out.rstrip("/").split("/")[-1]
        net = next(n for n in spec["nets"] if name.startswith(n + "-") and name[len(n) + 1:].split("-nl")[0] in C.ROWS)
        row = name[len(net) + 1:].split("-nl")[0]
        expected = C.config_for(spec, net, row, args.seed)
        assert train_config(args).to_dict() == expected.to_dict(), cmd
        seen.add((net, row, args.seed))
    assert ("conv-small", "drmm-relu-topdown", 0) in seen
    assert C.config_for(spec, "conv-small", "drmm-relu-topdown", 0).relu_topdown
    assert C.config_for(spec, "conv-small", "drmm-ce-rc-nn-h", 0).lr_schedule == f"linear-decay:{spec['epochs'] // 2}"


def test_verdict_is_the_best_drmm_mean_against_one_percent_and_lists_missing_runs():
    spec = {"nets": ("a", "b"), "rows": ("dcn", "drmm-ce-rc-nn-h"), "seeds": (0, 1)}
    errors = {"a": {"dcn": {0: 0.03, 1: 0.05}, "drmm-ce-rc-nn-h": {0: 0.009, 1: 0.010}},
              "b": {"dcn": {0: 0.02, 1: 0.02}, "drmm-ce-rc-nn-h": {0: 0.02, 1: 0.03}}}
    out = C.analyse(errors, spec)
    assert out["PASS"] and out["best_drmm"]["net"] == "a"
    assert out["best_drmm"]["mean_test_error"] == pytest.approx(0.0095)
    assert out["gap_to_paper_points"] == pytest.approx(100 * (0.0095 - 0.0057))
    errors["a"]["drmm-ce-rc-nn-h"][1] = 0.012  # mean 1.05%: above the line
    assert not C.analyse(errors, spec)["PASS"]
    del errors["b"]["dcn"][1]
    out = C.analyse({"a": {"drmm-ce-rc-nn-h": {0: 0.001, 1: 0.001}}}, spec)
    assert not out["PASS"] and out["missing"]  # a low error does not pass with runs missing


def test_curves_report_the_last_epoch_and_the_validation_selected_one_beside_it():
    log = {"epochs": [{"epoch": 0, "test_error": 0.9, "validation_error": 0.9},
                      {"epoch": 1, "test_error": 0.10, "validation_error": 0.08},
                      {"epoch": 2, "test_error": 0.07, "validation_error": 0.05},
                      {"epoch": 3, "test_error": 0.06, "validation_error": 0.06}]}
    c = C.curves(log)
    assert (c["epochs"], c["test_error"]) == (3, 0.06)  # the result: the last epoch, nothing chosen on test
    assert (c["selected_epoch"], c["selected_test_error"]) == (2, 0.07)
    assert c["test_error_per_epoch"] == [0.10, 0.07, 0.06]


def test_fig_ssl_converged_plots_a_record(tmp_path):
    """The test-error-against-epochs figure draws one panel per net from a record and writes PNG and PDF."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "figures"))
    try:
        import fig_ssl_converged
    finally:
        sys.path.pop(0)

    def run(net, row, seed, errs):
        best = min(range(len(errs)), key=lambda i: errs[i])
        return {"group": "required", "net": net, "row": row, "seed": seed, "test_error_per_epoch": errs,
                "validation_error_per_epoch": errs, "selected_epoch": best + 1, "selected_test_error": errs[best],
                "test_error": errs[-1]}

    record = {"mode": "full", "status": "fail",
              "measured": {"runs": [run("conv-small", "dcn", 0, [0.3, 0.2, 0.18]),
                                    run("conv-small", "drmm-ce-rc-nn-h", 0, [0.1, 0.05, 0.02]),
                                    run("conv-small-ladder", "dcn", 0, [0.3, 0.25, 0.2])],
                           "paper_error_100": 0.0057, "pass_error": 0.01,
                           "protocol": {"epochs": 3, "lr_schedule": "linear-decay:1"}}}
    paths = fig_ssl_converged.plot(record, tmp_path)
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in paths)
