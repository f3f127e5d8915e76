"""The porting kit (drmm_ref.conformance): fixtures, the runner, and its diagnosis of broken adapters.

The broken adapters are independent implementations (SciPy convolutions, NumPy reshape pooling)
with one classic slip each; the runner must fail them and name the slip (docs/porting.md).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from scipy import signal

from drmm_ref.conformance import fixtures as FX
from drmm_ref.conformance import generate as G
from drmm_ref.conformance import runner as RN
from drmm_ref.conformance.reference import ADAPTER, ReferenceAdapter
from drmm_ref.conformance.spec import OPERATIONS


@pytest.fixture(scope="module")
def cases():
    return FX.load_cases()


def _run(adapter, cases, only):
    return {r.name: r for r in RN.run_cases(adapter, cases, only=only)}


# -- the fixtures ------------------------------------------------------------------------------
def test_every_operation_has_cases_and_ties_are_tagged(cases):
    ops = {c.op for c in cases}
    assert ops == {op.name for op in OPERATIONS}
    assert any("ties" in c.tags for c in cases if c.op == "maxpool2d")
    assert any("ties" in c.tags for c in cases if c.op == "bottom_up")
    for net in ("tiny", "small2", "conv-small", "conv-small-ladder", "odd-q-ge-k", "odd-ladder"):
        assert any(c.name.startswith(net + "/") for c in cases), net


def test_fixtures_are_small_and_float64(cases):
    total = sum(p.stat().st_size for p in FX.fixture_dir().glob("*.npz"))
    assert total < 5 * 2**20
    for c in cases:
        for k, v in c.expected.items():
            assert v.dtype.kind in "biu" or v.dtype == np.float64, (c.name, k, v.dtype)


def test_regeneration_gives_the_shipped_cases_with_every_array_equal_to_rounding(tmp_path):
    """On the machine that wrote them the files regenerate byte for byte; on another CPU the computed arrays may
    differ in the last bits (other SIMD paths of the BLAS and of exp), the cases never."""
    groups = ["primitives", "drmm-tiny", "drmm-odd-ladder", "rmm"]
    for path in G.generate(tmp_path, groups, verbose=False):
        verdict, d = G.compare_fixtures(path, FX.fixture_dir() / path.name)
        assert verdict in ("identical", "rounding"), (
            f"{path.name} regenerates differently ({verdict}): if drmm_ref's numerics changed on purpose, rerun "
            "`python -m drmm_ref.conformance.generate` and commit the fixtures")
        assert d <= G.ROUNDING_RTOL
    again = G.generate(tmp_path / "again", ["primitives"], verbose=False)[0]
    assert again.read_bytes() == (tmp_path / "primitives.npz").read_bytes()  # same machine: the same bytes


def test_compare_fixtures_tells_rounding_from_a_changed_output_or_input(tmp_path):
    import dataclasses

    shipped = FX.fixture_dir() / "primitives.npz"
    _, cases = FX.read_fixture(shipped)
    i = next(i for i, c in enumerate(cases) if any(v.dtype.kind == "f" and v.size for v in c.expected.values()))
    key = next(k for k, v in cases[i].expected.items() if v.dtype.kind == "f" and v.size)

    def written(name, case):
        changed = [case if j == i else c for j, c in enumerate(cases)]
        return FX.write_fixture(tmp_path / name, "primitives", changed, G._shared_keys(changed), G.GENERATOR)

    out = cases[i].expected[key]
    ulp = dataclasses.replace(cases[i], expected={**cases[i].expected, key: np.nextafter(out, np.inf)})
    verdict, d = G.compare_fixtures(written("ulp.npz", ulp), shipped)
    assert verdict == "rounding" and 0 < d <= G.ROUNDING_RTOL
    big = dataclasses.replace(cases[i], expected={**cases[i].expected, key: out + 1e-9 * np.max(np.abs(out))})
    verdict, d = G.compare_fixtures(written("big.npz", big), shipped)
    assert verdict.startswith(f"differ: {cases[i].name}: outputs off by") and d > G.ROUNDING_RTOL
    arg = next(k for k, v in cases[i].inputs.items() if isinstance(v, np.ndarray) and v.dtype.kind == "f")
    x = cases[i].inputs[arg]
    moved = dataclasses.replace(cases[i], inputs={**cases[i].inputs, arg: x + 1e-6 * np.max(np.abs(x))})
    assert G.compare_fixtures(written("input.npz", moved), shipped)[0].startswith(f"differ: {cases[i].name}: inputs")
    shape = dataclasses.replace(cases[i], expected={**cases[i].expected, key: out.astype(np.float32)})
    assert G.compare_fixtures(written("dtype.npz", shape), shipped) == (f"differ: {cases[i].name}: outputs",
                                                                        pytest.approx(float("nan"), nan_ok=True))
    assert G.compare_fixtures(shipped, shipped) == ("identical", 0.0)


def test_corrupted_or_stale_fixture_is_refused(tmp_path):
    for f in FX.fixture_dir().iterdir():
        shutil.copy(f, tmp_path / f.name)
    target = tmp_path / "drmm-tiny.npz"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(FX.FixtureError):
        FX.load_cases(tmp_path)
    with pytest.raises(FX.FixtureError, match="no such"):
        FX.read_fixture(tmp_path / "missing.npz")


# -- the runner on the reference ---------------------------------------------------------------
def test_reference_adapter_passes_every_case(cases):
    results = RN.run_cases(ADAPTER, cases)
    bad = [(r.name, r.status, r.message) for r in results if r.status != "PASS"]
    assert not bad
    assert len(results) == len(cases) > 150


def test_command_line_report_and_exit_status(tmp_path, capsys):
    report = tmp_path / "r.json"
    code = RN.main(["--adapter", "drmm_ref.conformance.reference:ADAPTER", "--only", "tiny/", "--json", str(report)])
    assert code == 0
    rec = json.loads(report.read_text())
    assert rec["counts"]["PASS"] > 10 and rec["counts"]["FAIL"] == 0
    code = RN.main(["--adapter", f"{__name__}:FlatPositions", "--only", "primitives/maxpool2d/pool2"])
    out = capsys.readouterr().out
    assert code == 1 and "FAIL" in out and "flat-positions" in out


def test_missing_methods_are_skipped(cases):
    class OnlyConv:
        conv2d = ReferenceAdapter.conv2d

    results = RN.run_cases(OnlyConv(), cases, only=["primitives/"])
    assert {r.status for r in results if r.op == "conv2d"} == {"PASS"}
    assert {r.status for r in results if r.op != "conv2d"} == {"SKIP"}


def test_wrong_shape_and_missing_output_fail(cases):
    class Bad(ReferenceAdapter):
        def conv2d(self, x, weight, padding):
            return super().conv2d(x, weight, padding)[:, :, 1:, :]

        def maxpool2d(self, x, pool):
            return {"values": super().maxpool2d(x, pool)["values"]}

    res = _run(Bad(), cases, ["conv2d", "maxpool2d"])
    assert all(r.status == "FAIL" for r in res.values())
    assert "shape" in res["primitives/conv2d/basic"].message
    assert "missing" in res["primitives/maxpool2d/pool2"].message


# -- broken adapters: independent implementations with one slip each ---------------------------
def _conv_scipy(x, w, q, flip):
    """conv2d by SciPy: correlate2d (right) or convolve2d (the flipped-kernel slip)."""
    op = signal.convolve2d if flip else signal.correlate2d
    xp = np.pad(x, ((0, 0), (0, 0), (q, q), (q, q)))
    n, o = x.shape[0], w.shape[0]
    out = [[sum(op(xp[i, c], w[j, c], mode="valid") for c in range(x.shape[1])) for j in range(o)] for i in range(n)]
    return np.asarray(out)


def _windows(x, p):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // p, p, w // p, p).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // p, w // p, p * p)


def _pool(x, p, last=False, flat=False):
    win = _windows(x, p)
    t = (p * p - 1 - np.argmax(win[..., ::-1], axis=-1)) if last else np.argmax(win, axis=-1)
    values = np.take_along_axis(win, t[..., None], axis=-1)[..., 0]
    if flat:
        hp, wp = t.shape[2:]
        rows = np.arange(hp)[:, None] * p + t // p
        cols = np.arange(wp)[None, :] * p + t % p
        t = rows * x.shape[3] + cols
    return values, t.astype(np.int64)


class NumpyDRMM:
    """A small independent bottom-up pass (SciPy convolutions, reshape pooling) with switchable slips."""

    name = "numpy test port"
    flip = last = flat = False

    def conv2d(self, x, weight, padding):
        return _conv_scipy(x, weight, padding, self.flip)

    def maxpool2d(self, x, pool):
        v, t = _pool(x, pool, self.last, self.flat)
        return {"values": v, "positions": t}

    def bottom_up(self, net, params, images):
        h, out = images, {}
        for l, layer in enumerate(net["layers"], start=1):
            u = _conv_scipy(h, params[f"filters_{l}"], layer["padding"], self.flip)
            u = u + params[f"biases_{l}"][None, :, None, None]
            p = layer["pool"]
            r = np.maximum(u, 0.0)
            h, t = _pool(r, p, self.last, self.flat) if p > 1 else (r, np.zeros(u.shape, np.int64))
            if not self.flat:
                t = np.where(h > 0, t, 0)
            out.update({f"preactivations_{l}": u, f"features_{l}": h, f"positions_{l}": t, f"switches_{l}": h > 0})
        mu = np.broadcast_to(params["class_templates"], (net["n_classes"],) + h.shape[1:])
        out["scores"] = np.einsum("nchw,kchw->nk", h, mu) + params["class_biases"]
        return out


class FlippedKernels(NumpyDRMM):
    flip = True


class LastMaxTies(NumpyDRMM):
    last = True


class FlatPositions(NumpyDRMM):
    flat = True


def _slips(r):
    return [d["slip"] for d in r.diagnosis]


SMALL = ["primitives/conv2d/", "primitives/maxpool2d/", "tiny/bottom_up", "tiny/ties/bottom_up", "odd-*/bottom_up"]


def test_the_numpy_test_port_passes(cases):
    res = _run(NumpyDRMM(), cases, SMALL)
    assert res and all(r.status == "PASS" for r in res.values()), [(r.name, r.message) for r in res.values()
                                                                   if r.status != "PASS"]


def test_flipped_kernels_are_diagnosed(cases):
    res = _run(FlippedKernels(), cases, SMALL)
    conv = [r for r in res.values() if r.op == "conv2d" and not r.name.endswith("k1")]
    assert conv and all(r.status == "FAIL" and _slips(r) == ["flipped-kernels"] for r in conv)
    nets = [r for r in res.values() if r.op == "bottom_up" and "ties" not in r.name]
    assert nets and all(r.status == "FAIL" and "flipped-kernels" in _slips(r) for r in nets)
    assert res["primitives/conv2d/k1"].status == "PASS"  # a 1x1 kernel is its own flip


def test_last_max_ties_are_diagnosed_only_where_there_are_ties(cases):
    res = _run(LastMaxTies(), cases, SMALL)
    for name, r in res.items():
        if "ties" in name:
            assert r.status == "FAIL" and _slips(r) == ["last-max-ties"], (name, r.message, r.diagnosis)
        else:  # the other cases keep a margin from every tie: a last-max port passes them
            assert r.status == "PASS", (name, r.message)


def test_flat_positions_are_diagnosed(cases):
    res = _run(FlatPositions(), cases, ["primitives/maxpool2d/", "tiny/bottom_up", "odd-pool3-k1/bottom_up"])
    # with p = 1 too: PyTorch's index of the only entry is row * W + col, our position is 0
    assert res and all(r.status == "FAIL" and _slips(r) == ["flat-positions"] for r in res.values()), \
        [(n, r.diagnosis) for n, r in res.items()]


class ParamMean(ReferenceAdapter):
    """Averages the parameter cotangents over the batch (SPEC sums them)."""

    def backward(self, net, params, images, grad_scores):
        out = super().backward(net, params, images, grad_scores)
        return {k: (v if k == "input" else v / images.shape[0]) for k, v in out.items()}


class BatchSum(ReferenceAdapter):
    """Sums CE over the labelled rows and every other term over the batch (SPEC averages)."""

    def objective(self, net, params, images, labels, weights):
        n, nl = len(labels), int(np.sum(np.asarray(labels) != -1))
        terms = [t for t in ("ce", "rc", "nn", "h", "balance") if weights[t] > 0]
        if len(terms) != 1:
            return super().objective(net, params, images, labels, weights)
        f = {"ce": nl, "balance": 1}.get(terms[0], n)
        out = super().objective(net, params, images, labels, weights)
        return {"terms": {k: f * v for k, v in out["terms"].items()},
                "gradients": {k: f * v for k, v in out["gradients"].items()}}


class RCOverSigma2(ReferenceAdapter):
    def objective(self, net, params, images, labels, weights):
        out = super().objective(net, params, images, labels, weights)
        if weights["rc"] > 0 and sum(weights[t] > 0 for t in ("ce", "nn", "h", "balance")) == 0:
            s2 = float(params["noise_variance"])
            return {"terms": {k: v / s2 for k, v in out["terms"].items()},
                    "gradients": {k: v / s2 for k, v in out["gradients"].items()}}
        return out


def test_mean_versus_sum_is_diagnosed(cases):
    res = _run(ParamMean(), cases, ["backward"])
    assert res and all(r.status == "FAIL" and _slips(r) == ["param-mean"] for r in res.values()
                       if "ties" not in r.name)
    res = _run(BatchSum(), cases, ["objective"])
    single = {n: r for n, r in res.items() if not n.endswith(("/all", "/balance"))}
    assert single and all(r.status == "FAIL" and "batch-sum" in _slips(r) for r in single.values()), \
        [(n, r.diagnosis) for n, r in single.items()]
    assert all(r.status == "PASS" for n, r in res.items() if n.endswith(("/all", "/balance")))


def test_rc_over_sigma2_is_diagnosed(cases):
    res = _run(RCOverSigma2(), cases, ["*/objective/rc"])
    assert res and all(r.status == "FAIL" and _slips(r) == ["rc-over-sigma2"] for r in res.values())


def test_missing_ladder_factor_is_diagnosed(cases):
    class GAP(NumpyDRMM):
        def bottom_up(self, net, params, images):
            out = super().bottom_up(net, params, images)
            if net["constant_templates"]:
                h = out[f"features_{len(net['layers'])}"]
                v = params["class_templates"][:, :, 0, 0]
                out["scores"] = h.mean(axis=(2, 3)) @ v.T + params["class_biases"]
            return out

    res = _run(GAP(), cases, ["*/bottom_up"])
    for name, r in res.items():
        if name.startswith(("odd-ladder", "conv-small-ladder")):
            assert r.status == "FAIL" and _slips(r) == ["missing-hw"], (name, r.diagnosis)
        else:
            assert r.status == "PASS", name


def test_unpinned_rmm_scores_are_diagnosed(cases):
    class Unpinned(ReferenceAdapter):
        def rmm_max_sum_scores(self, rmm, images):
            return self.rmm_dcn_scores(rmm, images)

    res = _run(Unpinned(), cases, ["rmm_max_sum_scores"])
    assert res and all(r.status == "FAIL" and _slips(r) == ["unpinned-dcn"] for r in res.values())
