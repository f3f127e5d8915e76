"""Semi-supervised and unsupervised EG (SPEC §5, docs/ssl.md): label split, paired batches, masked CE,
the balance term, cluster accuracy, and the trainer's semi-supervised runs (no label leaks, resume)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drmm_ref.drmm import Layer, Network, init_params
from drmm_ref.learning import (UNLABELLED, LossWeights, TrainConfig, balance_term, cross_entropy, e_step,
                               latest_checkpoint, load_checkpoint, synthetic_digits, train, trainable)
from drmm_ref.learning.semi import cluster_accuracy, confusion_matrix, label_split, paired_batches
from drmm_ref.learning.fit_loop import Batches
from drmm_ref.learning.trainer import _same_run

from ._helpers import host

NARROW = Network((1, 28, 28), (Layer(4, 5, 0, 2), Layer(8, 5, 0, 2)), n_classes=10, name="narrow-small2")


# --------------------------------------------------------------------------------------------- the split
@given(n_per_class=st.integers(4, 30), per_class=st.integers(0, 3), seed=st.integers(0, 2**31))
def test_label_split_is_balanced_disjoint_complete_and_reproducible(n_per_class, per_class, seed):
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(10), n_per_class))
    s = label_split(labels, 10 * per_class, seed)
    assert s.labelled.size == 10 * per_class
    np.testing.assert_array_equal(np.bincount(labels[s.labelled], minlength=10), per_class)
    assert np.intersect1d(s.labelled, s.unlabelled).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([s.labelled, s.unlabelled])), np.arange(labels.size))
    again = label_split(labels, 10 * per_class, seed)
    np.testing.assert_array_equal(s.labelled, again.labelled)


def test_label_split_rejects_bad_counts():
    labels = np.repeat(np.arange(10), 5)
    with pytest.raises(ValueError, match="n_labels"):
        label_split(labels, -10, 0)
    with pytest.raises(ValueError, match="multiple"):
        label_split(labels, 15, 0)
    with pytest.raises(ValueError, match="no unlabelled"):
        label_split(labels, 50, 0)


# -------------------------------------------------------------------------------------------- the batches
@given(n_u=st.integers(1, 300), n_l=st.integers(0, 40), batch=st.integers(1, 64), seed=st.integers(0, 2**31))
def test_paired_batches_counts_and_oversampling(n_u, n_l, batch, seed):
    from drmm_ref.learning.semi import LabelSplit

    split = LabelSplit(np.arange(n_l, dtype=np.int64), np.arange(n_l, n_l + n_u, dtype=np.int64), n_l, 0)
    pairs = paired_batches(split, batch, np.random.default_rng(seed))
    assert len(pairs) == math.ceil(n_u / batch)
    # every unlabelled image exactly once per epoch
    np.testing.assert_array_equal(np.sort(np.concatenate([u for _, u in pairs])), split.unlabelled)
    for lab, unl in pairs:
        assert lab.size == (unl.size if n_l else 0)  # equal halves
        assert np.isin(lab, split.labelled).all() and not np.isin(unl, split.labelled).any()
    if n_l:
        # oversampled evenly: fresh permutations back to back, so counts differ by at most one
        counts = np.bincount(np.concatenate([lab for lab, _ in pairs]), minlength=n_l)
        assert counts.sum() == n_u and counts.max() - counts.min() <= 1


def test_paired_batches_schedule_follows_the_generator_state():
    split = label_split(np.repeat(np.arange(10), 20), 30, seed=1)
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    first = paired_batches(split, 16, a)
    second = paired_batches(split, 16, b)
    for (la, ua), (lb, ub) in zip(first, second):
        np.testing.assert_array_equal(la, lb)
        np.testing.assert_array_equal(ua, ub)
    assert not np.array_equal(paired_batches(split, 16, a)[0][1], first[0][1])  # the next epoch reshuffles


def test_batch_gives_unlabelled_half_the_sentinel_and_dcn_only_the_labelled_half():
    xtr = np.arange(6 * 4, dtype=np.float32).reshape(6, 1, 2, 2)
    ytr = np.array([3, 1, 4, 1, 5, 9])
    idx_l, idx_u = np.array([0, 2]), np.array([1, 5])
    x, y = Batches(xtr, ytr, 2).batch((idx_l, idx_u), "float32", np)
    np.testing.assert_array_equal(y, [3, 4, UNLABELLED, UNLABELLED])
    np.testing.assert_array_equal(x, xtr[[0, 2, 1, 5]])
    x, y = Batches(xtr, ytr, 2, labels_only=True).batch((idx_l, idx_u), "float32", np)
    np.testing.assert_array_equal(y, [3, 4])
    np.testing.assert_array_equal(x, xtr[[0, 2]])


# --------------------------------------------------------------------------------------- the objective
@given(n=st.integers(2, 12), k=st.integers(2, 6), seed=st.integers(0, 2**31))
def test_cross_entropy_ignores_unlabelled_rows(n, k, seed):
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((n, k))
    labels = rng.integers(0, k, size=n)
    mask = rng.random(n) < 0.5
    mask[0] = True
    mixed = np.where(mask, labels, UNLABELLED)
    v_mixed, g_mixed = cross_entropy(scores, mixed)
    v_sub, g_sub = cross_entropy(scores[mask], labels[mask])
    assert abs(float(v_mixed) - float(v_sub)) <= 1e-12 * max(1.0, abs(float(v_sub)))
    np.testing.assert_allclose(g_mixed[mask], g_sub, rtol=1e-12, atol=1e-15)
    assert np.all(g_mixed[~mask] == 0)


def test_cross_entropy_without_any_label_is_zero():
    v, g = cross_entropy(np.ones((3, 4)), np.full(3, UNLABELLED))
    assert float(v) == 0.0 and np.all(g == 0)


def test_balance_term_by_its_definition(xp):
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((7, 5))
    q = np.exp(scores) / np.exp(scores).sum(1, keepdims=True)
    qbar = q.mean(0)
    v, _ = balance_term(xp.asarray(scores))
    assert abs(float(v) - (math.log(5) + float(np.sum(qbar * np.log(qbar))))) < 1e-12
    # balanced batch -> 0; collapsed batch -> log K
    assert abs(float(balance_term(xp.asarray(np.eye(5) * 50.0))[0])) < 1e-12
    assert abs(float(balance_term(xp.asarray(np.tile([50.0, 0, 0, 0, 0], (4, 1))))[0]) - math.log(5)) < 1e-12


@given(n=st.integers(1, 8), k=st.integers(2, 5), seed=st.integers(0, 2**31))
@settings(max_examples=30)
def test_balance_term_gradient_matches_finite_differences(n, k, seed):
    scores = np.random.default_rng(seed).standard_normal((n, k)) * 2
    _, g = balance_term(scores)
    eps, num = 1e-6, np.zeros_like(scores)
    for i, j in itertools.product(range(n), range(k)):
        d = np.zeros_like(scores)
        d[i, j] = eps
        num[i, j] = (float(balance_term(scores + d)[0]) - float(balance_term(scores - d)[0])) / (2 * eps)
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)


def test_e_step_renders_unlabelled_examples_from_their_prediction():
    params = init_params(NARROW, 0)
    x = np.random.default_rng(0).random((6, 1, 28, 28))
    labels = np.array([2, UNLABELLED, 7, UNLABELLED, UNLABELLED, 0])
    est = e_step(params, x, labels)
    pred = host(est.forward.classes)
    np.testing.assert_array_equal(host(est.classes), np.where(labels == UNLABELLED, pred, labels))
    with pytest.raises(ValueError, match="out of range"):
        e_step(params, x, np.array([2, -2, 7, 0, 0, 0]))


# ------------------------------------------------------------------------------------ cluster accuracy
@given(k=st.integers(2, 5), n=st.integers(1, 60), seed=st.integers(0, 2**31))
@settings(max_examples=40)
def test_cluster_accuracy_equals_the_best_permutation_by_brute_force(k, n, seed):
    rng = np.random.default_rng(seed)
    pred, labels = rng.integers(0, k, n), rng.integers(0, k, n)
    m = confusion_matrix(pred, labels, k)
    best = max(sum(m[c, perm[c]] for c in range(k)) for perm in itertools.permutations(range(k))) / n
    res = cluster_accuracy(m)
    assert abs(res["accuracy"] - best) < 1e-12
    assert sum(res["cluster_sizes"]) == n and sorted(res["mapping"]) == list(range(k))


def test_cluster_accuracy_of_relabelled_clusters_is_one():
    labels = np.repeat(np.arange(4), 5)
    perm = np.array([2, 0, 3, 1])
    res = cluster_accuracy(confusion_matrix(perm[labels], labels, 4))
    assert res["accuracy"] == 1.0 and res["empty_clusters"] == 0
    assert [res["mapping"][perm[c]] for c in range(4)] == [0, 1, 2, 3]


# -------------------------------------------------------------------------------------------- the trainer
def _ssl_config(**kw):
    base = dict(model="drmm", net=NARROW, epochs=1, batch_size=20, data="synthetic", n_labels=20, monitor_size=20,
                weights=LossWeights(ce=1, rc=1, nn=0.5, h=0.2), lr=3e-3, seed=2)
    base.update(kw)
    return TrainConfig(**base)


def _same_params(a, b):
    ta, tb = trainable(a), trainable(b)
    for name in ta:
        np.testing.assert_array_equal(host(ta[name]), host(tb[name]), err_msg=name)


@pytest.mark.parametrize("model", ["drmm", "dcn"])
def test_no_label_reaches_an_unlabelled_example(tmp_path, model, monkeypatch):
    """Scrambling the labels of every unlabelled training image changes nothing in the run.

    The class-balanced draw of the labelled subset reads every label (to find each class's pool),
    so the split is pinned to the one drawn from the true labels; what is tested is the training loop.
    """
    import drmm_ref.learning.trainer as trainer_module

    data = synthetic_digits(120, 30, 30, seed=1)
    cfg = _ssl_config(model=model)
    split = label_split(data.train.labels, 20, seed=cfg.seed)
    monkeypatch.setattr(trainer_module, "label_split", lambda *a, **k: split)
    first = train(cfg, data, tmp_path / "a", progress=False)
    scrambled = np.array(data.train.labels).copy()
    scrambled[split.unlabelled] = np.random.default_rng(9).integers(0, 10, split.unlabelled.size)
    assert np.any(scrambled[split.unlabelled] != np.asarray(data.train.labels)[split.unlabelled])
    other = type(data)(type(data.train)(data.train.images, scrambled), data.validation, data.test, data.source)
    second = train(cfg, other, tmp_path / "b", progress=False)
    _same_params(first.params, second.params)
    assert first.log["labelled_indices"] == [int(i) for i in split.labelled]
    assert first.log["steps"][0]["objective"] == second.log["steps"][0]["objective"]


def test_semi_supervised_run_resumes_bit_identically(tmp_path):
    data = synthetic_digits(100, 20, 20, seed=3)
    cfg = _ssl_config(epochs=2)
    full = train(cfg, data, tmp_path / "full", progress=False)
    train(_ssl_config(epochs=1), data, tmp_path / "cut", progress=False)
    resumed = train(cfg, data, tmp_path / "cut", progress=False)
    _same_params(full.params, resumed.params)
    assert full.log["batches_per_epoch"] == math.ceil(80 / 20)
    assert [e["test_error"] for e in full.log["epochs"]] == [e["test_error"] for e in resumed.log["epochs"]]


def test_unsupervised_run_logs_cluster_accuracy_and_pretraining_initialises_a_run(tmp_path):
    data = synthetic_digits(100, 30, 30, seed=4)
    unsup = train(_ssl_config(n_labels=0, weights=LossWeights(ce=0, rc=1, nn=0.5, h=0.2, balance=1.0)), data,
                  tmp_path / "pre", progress=False)
    ep = unsup.log["epochs"][-1]
    assert 0.0 < ep["test_cluster_accuracy"] <= 1.0 and sum(ep["test_cluster_sizes"]) == 30
    assert ep["mean_balance"] is not None and ep["mean_ce"] is None  # a_CE = 0: not computed
    ckpt = latest_checkpoint(tmp_path / "pre")
    fine = train(_ssl_config(epochs=0, init_from=str(ckpt)), data, tmp_path / "fine", progress=False)
    pre = load_checkpoint(ckpt).params
    mapping = fine.log["init_class_mapping"]  # cluster c became label mapping[c]
    assert sorted(mapping) == list(range(10))
    for c in range(10):
        np.testing.assert_array_equal(host(fine.params.class_templates)[mapping[c]], host(pre.class_templates)[c])
    for l in range(2):
        np.testing.assert_array_equal(host(fine.params.filters[l]), host(pre.filters[l]))
    with pytest.raises(ValueError, match="unsupervised"):
        _ssl_config(model="dcn", n_labels=0)
    with pytest.raises(ValueError, match="n_labels"):
        _ssl_config(n_labels=-5)


def test_configs_written_before_the_semi_supervised_fields_still_resume():
    cfg = TrainConfig(model="drmm", net="small2", epochs=10, seed=0).to_dict()
    old = {k: v for k, v in cfg.items() if k not in ("n_labels", "label_seed", "init_from")}
    old["weights"] = {k: v for k, v in old["weights"].items() if k != "balance"}
    assert _same_run(old, cfg) == []
    assert _same_run({**old, "lr": 0.5}, cfg) == ["lr"]


def test_rendered_negativity_equals_the_nn_term_and_vanishes_under_d1():
    """Two ways to the same number: the aggregated per-batch measure vs the NN term on the whole set."""
    from drmm_ref.drmm import bottom_up, rendered_negativity, top_down
    from drmm_ref.learning import nonnegativity

    net = Network((1, 12, 12), (Layer(3, 3, 1, 2), Layer(4, 3, 0, 2)), n_classes=3, name="neg-net")
    x = np.random.default_rng(1).standard_normal((20, 1, 12, 12))
    params = init_params(net, 5)
    measured = rendered_negativity(params, x, batch=7)
    expected, _ = nonnegativity(top_down(params, bottom_up(params, x)).renderings)
    assert abs(measured["mean_nn"] - float(expected)) <= 1e-12 * max(float(expected), 1e-300)
    assert measured["mean_nn"] > 0 and 0 < measured["negative_fraction"]["z2"] < 1
    d1 = rendered_negativity(init_params(net, 5, d1_condition=True), x)
    assert d1["mean_nn"] == 0.0 and all(v == 0.0 for v in d1["negative_fraction"].values())


def test_the_recorded_ssl_commands_build_exactly_the_claims_configurations():
    """`ssl-mnist` lists `drmm-ref train` commands as the way to run it: they must make the same runs."""
    import shlex

    from drmm_ref.cli import build_parser, train_config
    from validation import ssl_mnist

    cmds = ssl_mnist.full_commands()
    longer = ssl_mnist.FULL["longer"]
    assert len(cmds) == 2 * 3 * 3 + 2 * len(ssl_mnist.FULL["unsupervised_seeds"]) + 3 * len(longer["seeds"])
    for cmd in cmds:
        argv = shlex.split(cmd)
        assert argv[0] == "drmm-ref"
        args = build_parser().parse_args(argv[1:])
        name = args.out.rstrip("/").split("/")[-1]
        row = "unsupervised" if args.labels == 0 else name.split("-nl")[0].removeprefix(ssl_mnist.FULL["net"] + "-")
        assert (row == ssl_mnist.PRETRAINED_ROW) == (args.init_from is not None)
        spec = ssl_mnist.longer_spec(ssl_mnist.FULL) if name.endswith(f"-epochs{longer['epochs']}") else ssl_mnist.FULL
        assert (spec is not ssl_mnist.FULL) == (args.epochs == longer["epochs"] != ssl_mnist.FULL["epochs"])
        expected = ssl_mnist.config_for(spec, row, args.labels, args.seed)
        assert train_config(args).to_dict() == expected.to_dict(), cmd


def test_ssl_verdict_needs_every_drmm_row_below_the_dcn_at_every_label_count():
    """The claim's verdict and its paired per-seed differences, on hand-made final errors."""
    from validation.ssl_mnist import REQUIRED_ROWS, analyse

    dcn, rc, full = REQUIRED_ROWS
    good = {n: {dcn: {0: 0.20, 1: 0.30}, rc: {0: 0.10, 1: 0.32}, full: {0: 0.05, 1: 0.06}} for n in (100, 1000)}
    out = analyse(good)
    assert out["PASS"] and not out["missing"]
    c = next(c for c in out["comparisons"] if c["row"] == rc and c["n_labels"] == 100)
    np.testing.assert_allclose(c["paired_differences"], [-0.10, 0.02])
    assert c["paired_seeds"] == [0, 1] and c["seeds_below"] == 1 and c["below"]  # mean 0.21 < 0.25
    np.testing.assert_allclose(out["gap_to_paper_points"], 100 * (0.055 - out["paper_error_100"]))
    # one row's mean above the DCN's at one label count fails the claim, however small the excess
    bad = {**good, 1000: {**good[1000], full: {0: 0.251, 1: 0.25}}}
    assert not analyse(bad)["PASS"]
    # a missing required label count or row fails it too, and is listed
    short = analyse({100: good[100]})
    assert not short["PASS"] and short["missing"] == [f"N_L=1000 {r}" for r in REQUIRED_ROWS]


def test_a_longer_budget_run_starts_from_a_copy_of_the_shorter_run_and_never_overwrites(tmp_path):
    from validation.ssl_mnist import _extend, run_name

    assert run_name("n", "dcn", 100, 0, 5) == run_name("n", "dcn", 100, 0) + "-epochs5"
    base, out = tmp_path / "base", tmp_path / "base-epochs5"
    _extend(base, out)  # no base run: nothing to start from, a fresh run will train from scratch
    assert not out.exists()
    (base / "checkpoints").mkdir(parents=True)
    (base / "checkpoints" / "epoch-001.npz").write_bytes(b"ckpt")
    (base / "log.json").write_text("{}")
    _extend(base, out)
    assert (out / "checkpoints" / "epoch-001.npz").read_bytes() == b"ckpt" and (out / "log.json").exists()
    assert not list(tmp_path.glob("*.partial"))
    (out / "log.json").write_text("longer run's own log")
    _extend(base, out)  # an existing (perhaps unfinished) longer run is left alone to resume
    assert (out / "log.json").read_text() == "longer run's own log"


def test_align_classes_undoes_a_permutation_of_the_classes():
    from drmm_ref.drmm import bottom_up
    from drmm_ref.learning import align_classes

    net = Network((1, 12, 12), (Layer(3, 3, 1, 2), Layer(4, 3, 0, 1)), n_classes=4, name="align-net")
    params = init_params(net, 2, class_bias_scale=0.5)
    x = np.random.default_rng(0).standard_normal((200, 1, 12, 12))
    truth = host(bottom_up(params, x).classes)
    perm = np.array([2, 0, 3, 1])  # the "clusters" are the true classes renamed
    scrambled = params.replace(class_templates=params.class_templates[np.argsort(perm)],
                               class_biases=params.class_biases[np.argsort(perm)],
                               class_prior=params.class_prior[np.argsort(perm)])
    assert not np.array_equal(host(bottom_up(scrambled, x).classes), truth)
    aligned, mapping = align_classes(scrambled, x, truth)
    np.testing.assert_array_equal(host(bottom_up(aligned, x).classes), truth)
    np.testing.assert_allclose(host(aligned.class_templates), host(params.class_templates))
    assert sorted(mapping) == [0, 1, 2, 3]


# ------------------------------------------------------------------- semi-supervised vs labels-only (planted)
def _planted_two_class_problem(seed: int):
    """Images sampled from a planted 2-class DRMM whose classes are separable.

    Random planted DRMMs (``init_params(..., d1_condition=True)``) turned out to be useless here: their
    classes overlap (the planted model's own DCN is at chance), so no method can gain. This one is
    structured: 4 layer-1 strokes (unit-norm 3x3 filters), a layer-2 filter per stroke that renders
    only that stroke, and class c's template switching on layer-2 channels 2c and 2c+1. Switch prior
    0.8, noise variance 0.01, 2,000 training / 200 validation / 400 test images.
    """
    import types

    from drmm_ref.drmm import sample

    net = Network((1, 12, 12), (Layer(4, 3, 1, 2), Layer(4, 3, 0, 1)), n_classes=2, name="planted")
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((4, 1, 3, 3))
    w1 /= np.linalg.norm(w1.reshape(4, -1), axis=1)[:, None, None, None]
    w2 = np.zeros((4, 4, 3, 3))
    for j in range(4):
        w2[j, j] = np.abs(rng.standard_normal((3, 3)))
    mu = np.zeros((2, 4, 4, 4))
    for c in range(2):
        mu[c, 2 * c:2 * c + 2] = np.abs(rng.standard_normal((2, 4, 4)))
    planted = init_params(net, seed, d1_condition=True, noise_variance=0.01, switch_prior=0.8, dtype="float32")
    planted = planted.replace(filters=(w1.astype(np.float32), w2.astype(np.float32)),
                              class_templates=mu.astype(np.float32))

    def split(n, s):
        drawn = sample(planted, n, seed=s)
        return types.SimpleNamespace(images=host(drawn.images), labels=host(drawn.classes))

    return types.SimpleNamespace(train=split(2000, 1), validation=split(200, 2), test=split(400, 3), source="planted")


@pytest.mark.slow
def test_semi_supervised_drmm_beats_labels_only_dcn_on_planted_data(tmp_path):
    """10 labels + 1,990 unlabelled images, 4 epochs (252 paired steps of 32 + 32), 3 seeds.

    The learner is wider than the planted model (16 filters per layer): with the planted width (4)
    some initialisations get stuck whatever the labels, and the comparison measures only that.
    Measured while designing this test (mean test error over 4 seeds, labels-only DCN vs DRMM with
    SPEC §5's CE + RC + 0.5 NN + 0.2 H): planted seed 7: 3.6% vs 1.0%; seed 8: 24.6% vs 23.4% (no
    clear gain; with the batch-balance term 15.2%); seed 9: 13.1% vs 0.9%. The test uses seed 9 and
    asks for a 5-point margin; seed 8 shows that the gain is not universal.
    """
    data = _planted_two_class_problem(9)
    learner = Network((1, 12, 12), (Layer(16, 3, 1, 2), Layer(16, 3, 0, 1)), n_classes=2, name="learner")
    errors = {"dcn": [], "drmm": []}
    for seed in range(3):
        for model in errors:
            cfg = TrainConfig(model=model, net=learner, epochs=4, batch_size=32, n_labels=10, seed=seed, lr=1e-3,
                              data="synthetic", monitor_size=50, dtype="float32",
                              weights=LossWeights(ce=1, rc=1, nn=0.5, h=0.2))
            res = train(cfg, data, tmp_path / f"{model}-{seed}", progress=False)
            errors[model].append(res.log["epochs"][-1]["test_error"])
    dcn, drmm = float(np.mean(errors["dcn"])), float(np.mean(errors["drmm"]))
    assert drmm <= dcn - 0.05, errors
