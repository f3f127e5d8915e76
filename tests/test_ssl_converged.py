"""The ssl-mnist-converged claim: its recorded commands build its configurations; its verdict and curves."""

from __future__ import annotations

import shlex

import pytest

from drmm_ref.cli import build_parser, train_config
from validation import ssl_mnist_converged as C


def test_the_recorded_commands_build_exactly_the_claims_configurations():
    cmds = C.full_commands()
    spec = C.FULL
    table = spec["table"]
    assert len(cmds) == (len(spec["nets"]) * len(spec["seeds"]) * len(spec["rows"]) + len(spec["extras"])
                         + len(table["n_labels"]) * len(table["seeds"]) * len(table["rows"]))
    seen = set()
    for cmd in cmds:
        argv = shlex.split(cmd)
        assert argv[0] == "drmm-ref" and "--threads" in argv  # the thread count is part of a run's numbers
        args = build_parser().parse_args(argv[1:])
        name = args.out.rstrip("/").split("/")[-1]
        net = next(n for n in spec["nets"] if name.startswith(n + "-") and name[len(n) + 1:].split("-nl")[0] in C.ROWS)
        row = name[len(net) + 1:].split("-nl")[0]
        n_labels = int(name.split("-nl")[1].split("-")[0])
        epochs = int(name.split("-e")[-1]) if "-seed" in name and "-e" in name.split("-seed")[1] else None
        assert args.labels == n_labels and args.epochs == (epochs or spec["epochs"])
        expected = C.config_for(spec, net, row, args.seed, n_labels=n_labels, epochs=epochs)
        assert train_config(args).to_dict() == expected.to_dict(), cmd
        seen.add((net, row, args.seed, n_labels, epochs))
    assert ("conv-small", "drmm-relu-topdown", 0, 100, None) in seen
    assert ("conv-small", "drmm-ce-rc-nn-h", 0, 100, C.LONG_EPOCHS) in seen
    assert {(table["net"], r, 0, n, None) for r in table["rows"] for n in table["n_labels"]} <= seen
    assert len(seen) == len(cmds)  # no run twice
    # seed 0 of the verdict first, then seeds 1 and 2 of the verdict, the long informational run last
    assert all(" --seed 0 " in c and "--labels 100 " in c for c in cmds[:len(spec["nets"]) * len(spec["rows"])])
    assert all(" --seed 0 " not in c for c in cmds[-len(spec["nets"]) * len(spec["rows"]) * 2 - 1:-1])
    assert f"--epochs {C.LONG_EPOCHS} " in cmds[-1] and f"linear-decay:{C.LONG_EPOCHS // 2} " in cmds[-1]
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
    assert c["threads"] == []  # not logged
    log["epochs"][1]["threads"], log["epochs"][2]["threads"], log["epochs"][3]["threads"] = 1, 2, 2
    assert C.curves(log)["threads"] == [1, 2]  # resumed with another thread count: both named


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


def _run(net, row, seed, n_labels, err, group="required"):
    return {"group": group, "net": net, "row": row, "seed": seed, "n_labels": n_labels, "test_error": err}


def test_labels_table_takes_n_l_100_from_the_verdict_runs_and_the_rest_from_the_table_runs():
    spec = {"table": {"net": "a", "rows": ("dcn", "drmm-ce-rc-nn-h"), "n_labels": (600,), "seeds": (0,)}}
    runs = [_run("a", "dcn", 0, 100, 0.2), _run("a", "dcn", 1, 100, 0.1), _run("b", "dcn", 0, 100, 0.5),
            _run("a", "drmm-relu-topdown", 0, 100, 0.05, "extra"), _run("a", "dcn", 0, 600, 0.04, "table"),
            _run("a", "drmm-ce-rc-nn-h", 0, 600, 0.02, "table")]
    t = C.labels_table(runs, spec)
    assert list(t) == ["100", "600"]
    assert t["100"]["dcn"]["mean"] == pytest.approx(0.15) and t["100"]["dcn"]["n_seeds"] == 2
    assert "drmm-relu-topdown" not in t["100"]  # not a table row; other nets not either
    assert t["600"]["drmm-ce-rc-nn-h"]["per_seed"] == [0.02]
    assert t["100"]["dcn"]["n_unfinished"] == 0
    # an interim view: a run short of its planned epochs is counted, so that the figure can mark it
    interim = [{**_run("a", "dcn", 0, 600, 0.04, "table"), "epochs": 7, "planned_epochs": 20},
               {**_run("a", "dcn", 1, 600, 0.03, "table"), "epochs": 20, "planned_epochs": 20}]
    assert C.labels_table(interim, spec)["600"]["dcn"]["n_unfinished"] == 1


def test_progress_reads_the_runs_folder_then_the_archive_and_archive_drops_the_step_traces(tmp_path):
    import json

    root, archive = tmp_path / "runs", tmp_path / "archive"
    planned = C.planned_runs(C.FULL, root)
    names, configs = [p.out.name for p in planned], [p.config.to_dict() for p in planned]
    epochs = [{"epoch": 0, "test_error": 0.9, "validation_error": 0.9},
              {"epoch": 1, "test_error": 0.1, "validation_error": 0.2, "cumulative_train_cpu_seconds": 50.0,
               "steps": [{"objective": 1.0}] * 3},
              {"epoch": 2, "test_error": 0.2, "validation_error": 0.1, "cumulative_train_cpu_seconds": 100.0,
               "steps": [{"objective": 0.5}] * 3}]
    (root / names[0]).mkdir(parents=True)
    (root / names[0] / "log.json").write_text(json.dumps({"config": configs[0], "epochs": epochs,
                                                          "steps": {"objective": [1.0, 0.5]}}))
    (archive / names[1]).mkdir(parents=True)
    (archive / names[1] / "log.json").write_text(json.dumps({"config": configs[1], "epochs": epochs[:2]}))
    rows = {r["run"]: r for r in C.progress(root, archive)}
    assert rows[names[0]]["epochs_done"] == 2 and rows[names[0]]["log"] == "runs folder"
    assert rows[names[0]]["test_error"] == 0.2 and rows[names[0]]["selected_epoch"] == 2
    assert rows[names[0]]["cpu_seconds_per_epoch"] == pytest.approx(50.0)
    assert rows[names[1]]["epochs_done"] == 1 and rows[names[1]]["log"] == "archive"
    assert rows[names[2]]["epochs_done"] == 0
    table = C.progress_table(list(rows.values()))
    assert table.count("\n") == len(names) + 1 and "| 2 / 20 | 20.00% | 2 (20.00%) | 50 |" in table
    written = C.archive_logs(root, archive)
    assert written == [archive / names[0] / "log.json"]
    slim = json.loads(written[0].read_text())
    assert [e["epoch"] for e in slim["epochs"]] == [0, 1, 2] and all("steps" not in e for e in slim["epochs"])
    assert "steps" not in slim and slim["config"] == configs[0]
    # a log of another configuration under a planned run's name is refused, not counted as that run
    (root / names[2]).mkdir(parents=True)
    (root / names[2] / "log.json").write_text(json.dumps({"config": configs[0], "epochs": epochs}))
    with pytest.raises(ValueError, match="another configuration"):
        C.progress(root, archive)


def test_fig_ssl_draws_the_converged_records_label_table_and_fig_ssl_converged_only_n_l_100(tmp_path, monkeypatch):
    import sys
    from pathlib import Path

    import matplotlib.pyplot as plt

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "figures"))
    try:
        import fig_ssl
        import fig_ssl_converged
    finally:
        sys.path.pop(0)
    spec = {"table": {"net": "conv-small", "rows": ("dcn", "drmm-ce-rc-nn-h"), "n_labels": (600,), "seeds": (0,)}}
    runs = [_run("conv-small", "dcn", 0, 100, 0.15), _run("conv-small", "drmm-ce-rc-nn-h", 0, 100, 0.04),
            _run("conv-small", "dcn", 0, 600, 0.05, "table"), _run("conv-small", "drmm-ce-rc-nn-h", 0, 600, 0.02,
                                                                   "table")]
    for r in runs:
        r.update(test_error_per_epoch=[0.5, r["test_error"]], selected_epoch=2, selected_test_error=r["test_error"])
    record = {"id": "ssl-mnist-converged", "mode": "full", "status": "fail",
              "measured": {"runs": runs, "labels_table": C.labels_table(runs, spec), "paper_error_100": 0.0057,
                           "pass_error": 0.01, "protocol": {"epochs": 2, "lr_schedule": "linear-decay:1",
                                                            "table": {"net": "conv-small"}}}}
    drawn = {}
    monkeypatch.setattr(plt, "close", lambda fig: drawn.setdefault(len(drawn), fig))
    paths = fig_ssl.plot(record, tmp_path)
    assert [p.name for p in paths] == ["fig_ssl_converged_table.png", "fig_ssl_converged_table.pdf"]
    ys = {c.get_label().split(" (n=")[0]: list(c.lines[0].get_ydata()) for c in drawn[0].axes[0].containers}
    assert ys[fig_ssl.STYLE["dcn"][2]] == pytest.approx([15.0, 5.0])
    assert ys[fig_ssl.STYLE["drmm-ce-rc-nn-h"][2]] == pytest.approx([4.0, 2.0])
    fig_ssl_converged.plot(record, tmp_path)  # the epoch curves: N_L = 100 runs only
    curves = [ln for ln in drawn[1].axes[0].lines if list(ln.get_xdata()) == [1, 2]]
    assert sorted(ln.get_ydata()[-1] for ln in curves) == pytest.approx([4.0, 15.0])
    # a longer informational run (unfinished: 3 of 5 epochs): dashed, its epochs in the label, the axis to 5
    long = {**_run("conv-small", "drmm-ce-rc-nn-h", 0, 100, 0.03, "extra"), "planned_epochs": 5,
            "test_error_per_epoch": [0.5, 0.1, 0.03], "selected_epoch": 3, "selected_test_error": 0.03}
    record["measured"]["runs"] = runs + [long]
    fig_ssl_converged.plot(record, tmp_path)
    ax = drawn[2].axes[0]
    dashed = [ln for ln in ax.lines if ln.get_linestyle() == "--" and list(ln.get_xdata()) == [1, 2, 3]]
    assert len(dashed) == 1 and dashed[0].get_label().endswith(", 5 epochs")
    assert ax.get_xlim() == pytest.approx((0.5, 5.5))
    # an interim table with the N_L = 600 DRMM run still training: its point is drawn hollow, and the legend says so
    runs[3].update(epochs=1, planned_epochs=2)
    record["measured"]["labels_table"] = C.labels_table(runs, spec)
    fig_ssl.plot(record, tmp_path)
    ax = drawn[3].axes[0]
    hollow = [c for c in ax.collections if len(c.get_offsets()) == 1 and len(c.get_facecolor())
              and tuple(c.get_facecolor()[0]) == (1, 1, 1, 1)]
    assert [list(c.get_offsets()[0]) for c in hollow] == [pytest.approx([600 * 1.02, 2.0])]
    assert any("still training" in t.get_text() for t in ax.get_legend().get_texts())


def test_a_finished_run_is_collected_from_the_archive_with_its_d1_distance_once_its_checkpoints_are_gone(tmp_path):
    """archive_logs writes the slim log and (finished DRMM) the D1 distance of the final parameters; a runs folder
    without the run then reads both from the archive instead of training; a run still in the runs folder is
    trained (resumed) as before; an unfinished archived log is not a result."""
    import json

    from drmm_ref.learning import synthetic_digits, train
    from validation.ssl_mnist import _d1_distance

    spec = {**C.QUICK, "epochs": 2, "n_train": 160, "n_eval": 32, "batch_size": 16, "extras": (), "table": None,
            "rows": ("dcn", "drmm-ce-rc-nn-h")}
    data = synthetic_digits(160, 32, 32, seed=0)
    root, archive, empty = tmp_path / "runs", tmp_path / "archive", tmp_path / "elsewhere"
    plan = C.planned_runs(spec, root, "synthetic")
    results = {p.row: train(p.config, data, p.out, progress=False) for p in plan}
    images = data.test.images[:16]
    written = C.archive_logs(root, archive, test_images=images, spec=spec)
    assert sorted(w.relative_to(archive).as_posix() for w in written) == sorted(
        [f"{p.out.name}/log.json" for p in plan] + [f"{plan[1].out.name}/{C.D1_FILE}"])
    for p in plan:
        assert C._archived_run(p, root, archive) is None  # the runs folder has it: train() resumes it
        moved = p._replace(out=empty / p.out.name)
        log, d1, where = C._archived_run(moved, empty, archive)
        assert [e["epoch"] for e in log["epochs"]] == [0, 1, 2] and where.endswith(f"{p.out.name}/log.json")
        if p.row == "dcn":
            assert d1 is None
        else:
            assert d1 == json.loads(json.dumps(_d1_distance(results[p.row].params, images)))
    # an unfinished archived log is no result
    p = plan[0]
    log = json.loads((archive / p.out.name / "log.json").read_text())
    log["epochs"] = log["epochs"][:1]
    (archive / p.out.name / "log.json").write_text(json.dumps(log))
    assert C._archived_run(p._replace(out=empty / p.out.name), empty, archive) is None


def test_interim_record_has_every_logged_run_and_no_verdict(tmp_path):
    import json

    root, archive = tmp_path / "runs", tmp_path / "archive"
    planned = C.planned_runs(C.FULL, root)
    names, configs = [p.out.name for p in planned], [p.config.to_dict() for p in planned]
    epochs = [{"epoch": 0, "test_error": 0.9, "validation_error": 0.9},
              {"epoch": 1, "test_error": 0.1, "validation_error": 0.2}]
    for folder, name, config in ((root, names[0], configs[0]), (archive, names[1], configs[1])):
        (folder / name).mkdir(parents=True)
        (folder / name / "log.json").write_text(json.dumps({"config": config, "epochs": epochs}))
    rec = C.interim_record(root, archive)
    assert rec["status"] == "running" and "PASS" not in rec["measured"]
    runs = rec["measured"]["runs"]
    assert [r["log"] for r in runs] == ["runs folder", "archive"] and all(r["epochs"] == 1 for r in runs)
    assert rec["measured"]["labels_table"]["100"]  # the first two planned runs are conv-small at N_L = 100


def test_replace_progress_table_swaps_only_the_table_and_refuses_a_readme_without_one():
    readme = "# runs\n\ntext\n\n| run | group |\n|---|---|\n| a | b |\n\nafter\n"
    new = C.replace_progress_table(readme, "| run | group |\n|---|---|\n| c | d |\n| e | f |")
    assert new == "# runs\n\ntext\n\n| run | group |\n|---|---|\n| c | d |\n| e | f |\n\nafter\n"
    at_end = C.replace_progress_table("x\n| run | group |\n| a | b |", "| run | group |\n| z |")
    assert at_end == "x\n| run | group |\n| z |"
    with pytest.raises(ValueError, match="no progress table"):
        C.replace_progress_table("# runs\n| other | table |\n", "| run | group |")


def test_with_runs_missing_a_fail_is_settled_only_when_no_outcome_of_them_could_pass():
    """lowest_possible_mean puts every missing seed at 0%: above the line for every DRMM row settles the FAIL."""
    spec = {"nets": ("a", "b"), "rows": ("dcn", "drmm-ce-rc-nn-h"), "seeds": (0, 1, 2)}
    errors = {"a": {"dcn": {0: 0.15, 1: 0.18, 2: 0.16}, "drmm-ce-rc-nn-h": {0: 0.022, 1: 0.022, 2: 0.021}},
              "b": {"dcn": {0: 0.15, 1: 0.2}, "drmm-ce-rc-nn-h": {0: 0.03, 1: 0.029}}}
    out = C.analyse(errors, spec)
    assert out["missing"] == ["b dcn: 2 of 3 seeds", "b drmm-ce-rc-nn-h: 2 of 3 seeds"]
    assert out["lowest_possible_mean"]["b"]["drmm-ce-rc-nn-h"] == pytest.approx(0.059 / 3)
    assert out["settled"] and not out["PASS"] and not out["complete"]
    assert out["table"]["b"]["drmm-ce-rc-nn-h"]["n_seeds"] == 2
    errors["b"]["drmm-ce-rc-nn-h"] = {0: 0.012}  # (0.012 + 0 + 0) / 3 = 0.4%: the missing runs could still pass
    out = C.analyse(errors, spec)
    assert not out["settled"] and not out["PASS"]
    errors["b"] = {"dcn": {0: 0.15, 1: 0.2, 2: 0.17}, "drmm-ce-rc-nn-h": {0: 0.012, 1: 0.01, 2: 0.011}}
    out = C.analyse(errors, spec)
    assert out["settled"] and out["complete"] and not out["PASS"]  # complete: settled, whatever the outcome


def test_runs_outside_the_budget_come_last_and_an_unfinished_one_reports_how_far_it_came(tmp_path):
    import json

    cmds = C.full_commands()
    outside = C.FULL["outside_budget"]
    last = [c.split("--out ")[1].split()[0].rsplit("/", 1)[1] for c in cmds[-len(outside):]]
    assert sorted(last) == sorted(outside) and last[-1].endswith(f"-e{C.LONG_EPOCHS}")  # the long run last
    plan = {p.out.name: p for p in C.planned_runs(C.FULL, tmp_path / "runs")}
    assert set(outside) <= set(plan)
    p = plan[outside[0]]
    archive = tmp_path / "archive"
    got = C._not_finished(p, tmp_path / "runs", archive)
    assert (got["epochs_logged"], got["last_test_error"], got["planned_epochs"]) == (0, None, p.config.epochs)
    epochs = [{"epoch": e, "test_error": 0.9 - 0.1 * e, "validation_error": 0.9} for e in range(3)]
    (archive / p.out.name).mkdir(parents=True)
    (archive / p.out.name / "log.json").write_text(json.dumps({"config": p.config.to_dict(), "epochs": epochs}))
    got = C._not_finished(p, tmp_path / "runs", archive)
    assert got["epochs_logged"] == 2 and got["last_test_error"] == pytest.approx(0.7)
    assert got["command"].startswith("drmm-ref train ") and f"--epochs {p.config.epochs} " in got["command"]


def test_a_run_started_again_from_scratch_never_replaces_its_further_archived_log(tmp_path):
    """Checkpoints lost with a machine: the run starts over; progress reads the archive's further log, and
    archive_logs keeps it until the new run has caught up."""
    import json

    root, archive = tmp_path / "runs", tmp_path / "archive"
    p = C.planned_runs(C.FULL, root)[1]  # a DRMM run (the D1 file is only written for finished ones)
    epochs = [{"epoch": e, "test_error": 0.5 / (e + 1), "validation_error": 0.5 / (e + 1),
               "cumulative_train_cpu_seconds": 10.0 * e} for e in range(4)]

    def put(folder, n):
        (folder / p.out.name).mkdir(parents=True, exist_ok=True)
        (folder / p.out.name / "log.json").write_text(json.dumps({"config": p.config.to_dict(),
                                                                  "epochs": epochs[:n]}))

    put(archive, 4)  # 3 epochs archived
    put(root, 2)  # started again: 1 epoch so far
    row = next(r for r in C.progress(root, archive) if r["run"] == p.out.name)
    assert (row["epochs_done"], row["log"]) == (3, "archive")
    assert C.archive_logs(root, archive, test_images=[]) == []
    assert len(json.loads((archive / p.out.name / "log.json").read_text())["epochs"]) == 4
    assert C._not_finished(p, root, archive)["epochs_logged"] == 3
    put(root, 4)  # caught up: the runs folder's log is archived again (ties go to the runs folder)
    assert [w.name for w in C.archive_logs(root, archive, test_images=[])] == ["log.json"]
    row = next(r for r in C.progress(root, archive) if r["run"] == p.out.name)
    assert (row["epochs_done"], row["log"]) == (3, "runs folder")
