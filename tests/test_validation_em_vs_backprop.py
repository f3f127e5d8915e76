"""The em-vs-backprop-mnist claim's third row (EM with an exact M-step), its run commands, and the collection of
finished runs from their logs (``validation._claim.find_finished_log``) instead of training them again."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drmm_ref.cli import build_parser, train_config
from validation import _claim
from validation import em_vs_backprop_mnist as claim
from validation.em_vs_backprop_mnist import EXACT, analyse, analyse_variants, full_config

ROOT = Path(__file__).resolve().parent.parent
ARCHIVE = ROOT / "results" / "runs" / "em-vs-backprop-mnist"
RECORD = ROOT / "results" / "full" / "em-vs-backprop-mnist.json"


def _curve(errors, seconds_per_epoch, cpu_per_epoch=None):
    cpu = seconds_per_epoch if cpu_per_epoch is None else cpu_per_epoch
    return {"epoch": list(range(len(errors))), "test_error": list(errors),
            "train_seconds": [seconds_per_epoch * e for e in range(len(errors))],
            "train_cpu_seconds": [cpu * e for e in range(len(errors))]}


DCN = [0.9, 0.05, 0.03, 0.02, 0.015, 0.0100]  # E* = 1.00%, threshold 1.20%, reached at epoch 5
EG = [0.9, 0.05, 0.03, 0.02, 0.011, 0.0100]  # reached at epoch 4


# ----------------------------------------------------------------------------------------------- the analysis


def test_exact_row_that_reaches_the_threshold_in_half_the_epochs_and_cpu_seconds_passes():
    exact = _curve([0.9, 0.02, 0.011, 0.010, 0.010, 0.010], 100.0, cpu_per_epoch=10.0)  # epoch 2; 20 CPU-s
    curves = {"small2": {0: {"dcn": _curve(DCN, 10.0), "drmm": _curve(EG, 10.0), EXACT: exact}}}
    out = analyse_variants(curves)
    e = out[EXACT]["per_net"]["small2"]
    assert e["threshold"] == pytest.approx(0.012) and e["T_epochs"] == 2 and e["dcn_T_epochs"] == 5
    assert e["T_cpu_seconds"] == 20.0 and e["dcn_T_cpu_seconds"] == 50.0 and e["T_seconds"] == 200.0
    assert e["PASS_epochs"] and e["PASS_cpu_seconds"] and "PASS_seconds" not in e  # wall seconds: reported only
    assert out[EXACT]["PASS_epochs"] is True and out[EXACT]["PASS_cpu_seconds"] is True
    assert out[EXACT]["runs_planned"] == out[EXACT]["runs_finished"] == 1
    # the third row changes nothing of the G-step row's verdicts
    assert analyse(curves) == analyse({"small2": {0: {"dcn": _curve(DCN, 10.0), "drmm": _curve(EG, 10.0)}}})
    slow_cpu = _curve([0.9, 0.02, 0.011, 0.010, 0.010, 0.010], 10.0, cpu_per_epoch=40.0)  # epoch 2 but 80 CPU-s
    e = analyse_variants({"small2": {0: {"dcn": _curve(DCN, 10.0), "drmm": _curve(EG, 10.0), EXACT: slow_cpu}}})
    assert e[EXACT]["per_net"]["small2"]["PASS_epochs"] and not e[EXACT]["per_net"]["small2"]["PASS_cpu_seconds"]


def test_exact_row_that_never_reaches_the_threshold_reads_never_and_fails():
    chance = _curve([0.89, 0.894, 0.894, 0.894, 0.894, 0.894], 1000.0)  # the measured 1-epoch result, held
    out = analyse_variants({"small2": {0: {"dcn": _curve(DCN, 10.0), "drmm": _curve(EG, 10.0), EXACT: chance}}})
    e = out[EXACT]["per_net"]["small2"]
    assert e["T_epochs"] is None and e["T_cpu_seconds"] is None and e["T_seconds"] is None
    assert e["T_epochs_per_seed"] == [None] and e["PASS_epochs"] is False and e["PASS_cpu_seconds"] is False
    assert e["final_test_error_mean"] == pytest.approx(0.894) and e["test_error_per_epoch_mean"][0] == 0.89
    assert claim._fmt(e["T_epochs"]) == "never"


def test_exact_row_on_fewer_seeds_than_planned():
    d0, d1, d2 = _curve([0.9, 0.02, 0.010], 10.0), _curve([0.9, 0.013, 0.014], 10.0), _curve([0.9, 0.03, 0.012], 10)
    m = _curve([0.9, 0.02, 0.011], 20.0)
    curves = {"small2": {0: {"dcn": d0, "drmm": m, EXACT: _curve([0.9, 0.012, 0.011], 5.0)},
                         1: {"dcn": d1, "drmm": m}, 2: {"dcn": d2, "drmm": m}},
              "conv-small": {0: {"dcn": d0, "drmm": m}}}
    planned = {EXACT: {"small2": [0, 1, 2], "conv-small": [0]}}
    out = analyse_variants(curves, planned)
    ex, base = out[EXACT], analyse(curves)
    e = ex["per_net"]["small2"]
    # E* is every DCN seed's (mean of 1.0, 1.4, 1.2% = 1.2%, threshold 1.4%); the DCN's T is taken on seed 0 only
    assert e["threshold"] == pytest.approx(0.014) == pytest.approx(base["small2"]["threshold"])
    assert e["seeds"] == [0] and e["planned_seeds"] == [0, 1, 2]
    assert e["T_epochs"] == 1 and e["dcn_T_epochs"] == 2 and base["small2"]["dcn"]["T_epochs_per_seed"] == [2, 1, 2]
    assert ex["per_net"]["conv-small"] == {"seeds": [], "planned_seeds": [0],
                                           "threshold": base["conv-small"]["threshold"]}
    assert ex["nets_measured"] == ["small2"] and ex["runs_planned"] == 4 and ex["runs_finished"] == 1
    assert ex["PASS_epochs"] is True  # over the measured nets only; the coverage is in runs_* and nets_measured
    nothing = analyse_variants({"small2": {0: {"dcn": d0, "drmm": m}}}, {EXACT: {"small2": [0]}})[EXACT]
    assert nothing["nets_measured"] == [] and nothing["PASS_epochs"] is None and nothing["runs_finished"] == 0


def test_a_seed_without_both_rows_is_refused():
    with pytest.raises(ValueError, match="lacks \\['drmm'\\]"):
        analyse({"small2": {0: {"dcn": _curve(DCN, 1.0), EXACT: _curve(EG, 1.0)}}})


def _first(errors, thr):
    return next((i for i, e in enumerate(errors) if e <= thr), None)


_errors = st.lists(st.sampled_from([0.9, 0.03, 0.015, 0.012, 0.011, 0.01, 0.008]), min_size=2, max_size=6)


@given(st.lists(st.tuples(_errors, _errors, st.one_of(st.none(), _errors)), min_size=1, max_size=3),
       st.floats(0.5, 50.0), st.floats(0.5, 50.0))
def test_variant_blocks_agree_with_the_net_verdicts_and_first_crossings(runs, sec_eg, sec_exact):
    curves = {"small2": {}}
    for s, (dcn, eg, exact) in enumerate(runs):
        curves["small2"][s] = {"dcn": _curve(dcn, 10.0), "drmm": _curve(eg, sec_eg)}
        if exact is not None:
            curves["small2"][s][EXACT] = _curve(exact, sec_exact)
    base = analyse(curves)["small2"]
    out = analyse_variants(curves)
    g = out["drmm"]["per_net"]["small2"]
    for key in ("PASS_seconds", "PASS_epochs", "PASS_cpu_seconds"):
        assert g[key] == base[key] == out["drmm"][key]
    assert g["T_epochs"] == base["drmm"]["T_epochs"] and g["dcn_T_epochs"] == base["dcn"]["T_epochs"]
    ex_seeds = [s for s, r in enumerate(runs) if r[2] is not None]
    if not ex_seeds:
        assert "small2" not in out[EXACT]["per_net"] and out[EXACT]["PASS_epochs"] is None
        return
    e = out[EXACT]["per_net"]["small2"]
    thr = base["threshold"]
    assert e["seeds"] == ex_seeds
    assert e["T_epochs_per_seed"] == [_first(runs[s][2], thr) for s in ex_seeds]
    first = [_first(runs[s][2], thr) for s in ex_seeds]
    dcn_first = [_first(runs[s][0], thr) for s in ex_seeds]
    # T = the median over seeds with "never" as infinity (a seed may never reach the line and T still be finite)
    t, t_dcn = claim._median(first), claim._median(dcn_first)
    assert e["T_epochs"] == t and e["dcn_T_epochs"] == t_dcn
    assert e["PASS_epochs"] == (t is not None and t_dcn is not None and t <= 0.5 * t_dcn)


# ----------------------------------------------------------------------------------------------- the commands


def test_commands_are_the_eight_old_ones_then_the_exact_rows(tmp_path):
    runs = tmp_path / "runs"
    env = {**os.environ, "DRMM_REF_RUNS": str(runs)}
    out = subprocess.run([sys.executable, "-m", "validation.em_vs_backprop_mnist", "--commands"], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    root = runs / "em-vs-backprop-mnist"
    old = [f"drmm-ref train --model {m} --net {n} --epochs 10 --seed {s} --out {root}/{n}-{m}-seed{s} --offline"
           for n, s in (("small2", 0), ("small2", 1), ("small2", 2), ("conv-small", 0)) for m in ("dcn", "drmm")]
    assert out[:8] == old
    assert out[8] == ("drmm-ref train --model drmm --net small2 --epochs 10 --seed 0 --m-step whole-set --k-cg 5 "
                      f"--threads 1 --out {root}/small2-drmm-exact-seed0 --offline")
    assert len(out) == 12 and all("--m-step whole-set --k-cg 5 --threads 1" in c for c in out[8:])
    assert [c.split("--out ")[1].split()[0].rsplit("/", 1)[1] for c in out[8:]] == [
        "small2-drmm-exact-seed0", "small2-drmm-exact-seed1", "small2-drmm-exact-seed2",
        "conv-small-drmm-exact-seed0"]


def test_each_command_builds_its_planned_configuration():
    for cmd in claim.full_commands():
        args = build_parser().parse_args(shlex.split(cmd)[1:])
        name = Path(args.out).name
        model = next(m for m in (EXACT, "drmm", "dcn") if f"-{m}-seed" in name)
        net, seed = name.split(f"-{model}-seed")[0], int(name.split(f"-{model}-seed")[1])
        assert train_config(args).to_dict() == full_config(model, net, seed).to_dict(), cmd
        assert (args.threads == 1) == (model == EXACT)


def test_full_config_refuses_an_unknown_model():
    with pytest.raises(ValueError, match="model must be one of"):
        full_config("exact", "small2", 0)


# ----------------------------------------------------------------------------------------------- finished logs


def _log(config, n_epochs):
    return {"config": config.to_dict(), "data_source": "test",
            "epochs": [{"epoch": e, "test_error": 0.5, "validation_error": 0.5, "cumulative_train_seconds": 1.0 * e,
                        "cumulative_train_cpu_seconds": 1.0 * e} for e in range(n_epochs + 1)]}


def _put(folder: Path, name: str, log: dict) -> None:
    (folder / name).mkdir(parents=True, exist_ok=True)
    (folder / name / "log.json").write_text(json.dumps(log))


def test_finished_log_from_the_runs_folder_then_the_archive(tmp_path):
    cfg = full_config(EXACT, "small2", 0)
    runs, archive = tmp_path / "runs", tmp_path / "archive"
    kw = {"runs": runs, "archive": archive}
    assert _claim.finished_log("c", "r", cfg, **kw) is None  # nothing anywhere
    _put(archive, "r", _log(cfg, 10))
    found = _claim.find_finished_log("c", "r", cfg, **kw)
    assert found is not None and found[1] == str(archive / "r" / "log.json") and len(found[0]["epochs"]) == 11
    _put(runs, "r", _log(cfg, 4))  # an unfinished run in the runs folder: the archive's finished log is used
    assert _claim.find_finished_log("c", "r", cfg, **kw)[1] == str(archive / "r" / "log.json")
    _put(runs, "r", _log(cfg, 10))
    log, where = _claim.find_finished_log("c", "r", cfg, **kw)
    assert where == "runs folder" and _claim.finished_log("c", "r", cfg, **kw) == log
    # the checkpoint cadence does not change a run; the epoch budget decides whether it has finished
    assert _claim.finished_log("c", "r", dataclasses.replace(cfg, checkpoint_every_steps=7), **kw)
    assert _claim.finished_log("c", "r", dataclasses.replace(cfg, epochs=12), **kw) is None
    # nor does the backend it finished on (a run resumed on a GPU is the planned run)
    _put(runs, "r", _log(dataclasses.replace(cfg, backend="cupy"), 10))
    assert _claim.finished_log("c", "r", cfg, **kw)["config"]["backend"] == "cupy"


def test_unfinished_logs_give_none(tmp_path):
    cfg = full_config("dcn", "small2", 1)
    _put(tmp_path / "runs", "r", _log(cfg, 9))
    _put(tmp_path / "archive", "r", _log(cfg, 3))
    assert _claim.finished_log("c", "r", cfg, runs=tmp_path / "runs", archive=tmp_path / "archive") is None


@pytest.mark.parametrize("where", ["runs", "archive"])
def test_a_log_of_another_configuration_is_refused(tmp_path, where):
    planned = full_config(EXACT, "small2", 0)
    other = full_config("drmm", "small2", 0)  # the G-step row: m_step and k_cg differ
    _put(tmp_path / where, "r", _log(other, 10))
    with pytest.raises(ValueError, match=r"another configuration.*\['k_cg', 'm_step'\]"):
        _claim.finished_log("c", "r", planned, runs=tmp_path / "runs", archive=tmp_path / "archive")


def test_a_damaged_log_is_refused(tmp_path):
    cfg = full_config("dcn", "small2", 0)
    log = _log(cfg, 10)
    del log["epochs"][3]
    _put(tmp_path / "runs", "r", log)
    with pytest.raises(ValueError, match="not 0, 1, ..., N"):
        _claim.finished_log("c", "r", cfg, runs=tmp_path / "runs", archive=tmp_path / "archive")


def test_the_committed_archive_is_found_with_its_planned_configurations(tmp_path):
    for net, seed in claim.FULL["runs"]:
        for model in ("dcn", "drmm"):
            name = claim.run_name(net, model, seed)
            found = _claim.find_finished_log(claim.CLAIM.id, name, full_config(model, net, seed), runs=tmp_path)
            assert found is not None and found[1] == f"results/runs/em-vs-backprop-mnist/{name}/log.json"
    assert _claim.archive_root(claim.CLAIM.id) == ARCHIVE


# ----------------------------------------------------------------------------------------------- the claim runs


@pytest.mark.validation
def test_full_collects_the_archive_and_finished_exact_runs_without_training(tmp_path, monkeypatch):
    """--full with every budget run finished trains nothing, loads no data, and gives the committed verdicts."""
    monkeypatch.setenv("DRMM_REF_RUNS", str(tmp_path / "runs"))
    cfg = full_config(EXACT, "small2", 0)
    log = _log(cfg, 10)
    for e in log["epochs"][1:]:  # at chance throughout, with the whole-set M-step's record
        e.update(test_error=0.894, whole_set={"rc_e_step": 0.05, "rc_m_step": 0.011, "seconds": 1.0,
                                              "cpu_seconds": 1.0, "blocks": [{"block": "filters_1", "rc_after": 0.03}]})
    _put(tmp_path / "runs" / "em-vs-backprop-mnist", "small2-drmm-exact-seed0", log)

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(claim, "train", no_training)
    monkeypatch.setattr("drmm_ref.data.load_mnist", no_training)
    rec = claim.main(["--full", "--out", str(tmp_path / "out")])
    committed = json.loads(RECORD.read_text())
    m = rec["measured"]
    assert m["per_net"] == committed["measured"]["per_net"] and rec["status"] == committed["status"]
    assert m["runs"]["small2-drmm-exact-seed0"] == "runs folder"
    assert m["runs"]["small2-dcn-seed1"] == "results/runs/em-vs-backprop-mnist/small2-dcn-seed1/log.json"
    assert m["runs"]["conv-small-drmm-exact-seed0"].startswith("not finished")
    ex = m["variants"][EXACT]
    assert (ex["runs_planned"], ex["runs_finished"], ex["nets_measured"]) == (4, 1, ["small2"])
    assert ex["per_net"]["small2"]["T_epochs"] is None and ex["PASS_epochs"] is False
    assert ex["per_net"]["small2"]["rc_m_step_per_epoch_mean"][1:] == [0.011] * 10
    assert m["curves"]["small2"]["0"][EXACT]["whole_set"][1]["rc_after_block"] == {"filters_1": 0.03}
    assert "drmm-exact small2 (1 of 3 planned seeds): T never/4 epochs" in rec["summary"]
    assert str(Path.home()) not in json.dumps(m) and str(tmp_path) not in json.dumps(m)  # no absolute paths


@pytest.mark.validation
def test_quick_claim_runs_the_three_rows(tmp_path, monkeypatch):
    """The quick path end to end on a smaller setting (the full quick setting runs in `python -m validation`)."""
    monkeypatch.setitem(claim.QUICK, "n_train", 128)
    monkeypatch.setitem(claim.QUICK, "n_eval", 100)
    monkeypatch.setitem(claim.QUICK, "epochs", 1)
    monkeypatch.setitem(claim.QUICK, "exact_chunk", 64)
    rec = claim.main(["--quick", "--out", str(tmp_path)])
    assert rec["status"] == "measured" and json.loads((tmp_path / "em-vs-backprop-mnist.json").read_text()) == rec
    m = rec["measured"]
    ws = m["curves"]["small2"]["0"][EXACT]["whole_set"]
    assert ws[0] is None and list(ws[1]["rc_after_block"]) == ["filters_1", "filters_2", "class_templates"]
    assert ws[1]["rc_m_step"] <= ws[1]["rc_e_step"]  # CGLS never raises RC at fixed latents
    ex = m["variants"][EXACT]["per_net"]["small2"]
    assert ex["seeds"] == [0] and len(ex["test_error_per_epoch_mean"]) == 2
    assert "k_CG 5, chunks of 64 images" in m["protocol"]["exact_m_step"]


def test_figure_with_and_without_the_exact_row(tmp_path):
    sys.path.insert(0, str(ROOT / "figures"))
    try:
        import fig_em_vs_backprop
    finally:
        sys.path.pop(0)
    committed = json.loads(RECORD.read_text())  # written before the third row: no "variants"
    assert [p.suffix for p in fig_em_vs_backprop.plot(committed, tmp_path / "old")] == [".png", ".pdf"]
    curves = {"small2": {0: {"dcn": _curve(DCN, 10.0), "drmm": _curve(EG, 20.0),
                             EXACT: _curve([0.9, 0.894, 0.894], 1000.0)}}}
    record = {"mode": "full", "measured": {"per_net": analyse(curves), "variants": analyse_variants(curves),
                                           "PASS_seconds": False, "PASS_epochs": False,
                                           "curves": {"small2": {"0": curves["small2"][0]}},
                                           "protocol": {"n_train": 50000}}}
    paths = fig_em_vs_backprop.plot(record, tmp_path / "new")
    assert all(p.stat().st_size > 1000 for p in paths)
