"""Hostile-user probe of drmm_ref (a review script, not a benchmark; docs/guarantees.md).

Run from a tree's root: `OPENBLAS_NUM_THREADS=1 python benchmarks/hostile_probe.py [--json OUT]` (~4 min).

Each case: expect 'error' (a ValueError/TypeError/package error whose message matches a pattern
naming the argument), or 'valid' (must return and pass its own check). Outcomes: clear, valid,
unexpected (other exception type or unclear message), silent (returned a wrong result / accepted
bad input), lost (data lost), hang (timeout).
"""
import errno
import gzip
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path.cwd()
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

import drmm_ref  # noqa: E402
import drmm_ref.io  # noqa: E402,F401
from drmm_ref import drmm as D  # noqa: E402
from drmm_ref import learning as Lrn  # noqa: E402
from drmm_ref import primitives as P  # noqa: E402
from drmm_ref import rmm as R  # noqa: E402

assert Path(drmm_ref.__file__).resolve().is_relative_to(ROOT), drmm_ref.__file__
CASES = []
TMP = Path(tempfile.mkdtemp(prefix="probe-"))


def case(name, expect="error", match=None):
    def deco(fn):
        CASES.append((name, expect, match, fn))
        return fn
    return deco


class Lost(Exception):
    pass


TINY = D.preset("tiny")


def tiny(seed=0, dtype="float64"):
    return D.init_params(TINY, seed, dtype=dtype)


def imgs(n=4, dtype="float64", seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal((n, 1, 6, 6)) * scale).astype(dtype)


NARROW = D.Network((1, 28, 28), (D.Layer(4, 5, 0, 2), D.Layer(8, 5, 0, 2)), n_classes=10, name="narrow")


def syn(n=60, m=20):
    return Lrn.synthetic_digits(n, m, m, seed=0)


def cfg(**kw):
    base = dict(model="dcn", net=NARROW, epochs=1, batch_size=30, data="synthetic", monitor_size=20)
    base.update(kw)
    return Lrn.TrainConfig(**base)


def finite(x):
    return bool(np.all(np.isfinite(np.asarray(drmm_ref.to_numpy(x)))))


# ------------------------------------------------------------------ DRMM parameters and model
for field in ("filters", "biases", "class_templates"):
    for bad in (np.nan, np.inf):
        @case(f"DRMMParams {field} with {bad}", match=field)
        def _(field=field, bad=bad):
            p = tiny()
            if field == "class_templates":
                a = np.array(p.class_templates)
                a.flat[0] = bad
                return p.replace(class_templates=a)
            arrs = [np.array(a) for a in getattr(p, field)]
            arrs[0].flat[0] = bad
            q = p.replace(**{field: tuple(arrs)})
            return D.bottom_up(q, imgs()).scores if field != "class_templates" else q


@case("init_params dtype float16", match="float16|float32")
def _():
    return D.init_params(TINY, 0, dtype="float16")


@case("init_params('tiny') name string", expect="valid_or_error", match="net|Network")
def _():
    p = D.init_params("tiny", 0)
    return isinstance(p, D.DRMMParams)


@case("init_params weight_gain=inf", match="finite|NaN|inf")
def _():
    return D.init_params(TINY, 0, weight_gain=float("inf"))


@case("bottom_up N=0", match="images")
def _():
    return D.bottom_up(tiny(), imgs(0)).scores


@case("log_joint N=0", match="images")
def _():
    p = tiny()
    fw = D.bottom_up(p, imgs(2))
    lat = D.Latents(tuple(t[:0] for t in fw.latents.positions), tuple(a[:0] for a in fw.latents.switches))
    return D.log_joint(p, imgs(0), np.zeros(0, np.int64), lat)


@case("render with N=0 latents", match="classes|latents|N")
def _():
    p = tiny()
    fw = D.bottom_up(p, imgs(2))
    lat = D.Latents(tuple(t[:0] for t in fw.latents.positions), tuple(a[:0] for a in fw.latents.switches))
    return D.render(p, 0, lat).image


@case("top_down with empty classes array", match="classes|N")
def _():
    p = tiny()
    fw = D.bottom_up(p, imgs(2))
    lat = D.Latents(tuple(t[:0] for t in fw.latents.positions), tuple(a[:0] for a in fw.latents.switches))
    return D.top_down(p, lat, np.zeros(0, np.int64)).image


for n in (2.7, "3", 0, -1, True):
    @case(f"sample(p, {n!r})", match=r"\bn\b")
    def _(n=n):
        return D.sample(tiny(), n).images


@case("render(p, [0.5, 1.2, 0, 1])", match="classes")
def _():
    p = tiny()
    fw = D.bottom_up(p, imgs(4))
    return D.render(p, [0.5, 1.2, 0, 1], fw.latents).image


@case("render(p, 1.0) float class", match="classes")
def _():
    p = tiny()
    fw = D.bottom_up(p, imgs(4))
    return D.render(p, 1.0, fw.latents).image


@case("bottom_up float32 images at 3e38", match="overflow|float32|large|finite|inf")
def _():
    s = D.bottom_up(tiny(dtype="float32"), imgs(4, "float32", scale=3e38 / 4)).scores
    return s if finite(s) else "nonfinite"


@case("log_joint float32 images at 1e30", match="overflow|float32|large|finite|inf")
def _():
    p = tiny(dtype="float32")
    x = imgs(4, "float32", scale=1e30)
    fw = D.bottom_up(p, x)
    v = D.log_joint(p, x, fw.classes, fw.latents)
    return v if finite(v) else "nonfinite"


@case("bottom_up float16 images", match="dtype|float")
def _():
    return D.bottom_up(tiny(), imgs(4, "float16")).scores


@case("bottom_up NaN images", match="images")
def _():
    x = imgs()
    x[0, 0, 0, 0] = np.nan
    return D.bottom_up(tiny(), x).scores


@case("bottom_up wrong shape", match="images")
def _():
    return D.bottom_up(tiny(), np.zeros((2, 1, 7, 6))).scores


@case("bottom_up integer images", match="images")
def _():
    return D.bottom_up(tiny(), np.zeros((2, 1, 6, 6), dtype=np.int64)).scores


@case("bottom_up rank 3", match="images")
def _():
    return D.bottom_up(tiny(), np.zeros((1, 6, 6))).scores


# ------------------------------------------------------------------ primitives
@case("conv2d float16", match="float16|float32|dtype")
def _():
    x = np.zeros((1, 1, 4, 4), np.float16)
    return P.conv2d(x, np.zeros((1, 1, 2, 2), np.float16), 0)


@case("maxpool2d float16", match="float16|float32|dtype")
def _():
    return P.maxpool2d(np.zeros((1, 1, 4, 4), np.float16), 2)[0]


@case("logsumexp over a size-0 axis", expect="valid_or_error", match="axis|empty|size")
def _():
    v = P.logsumexp(np.zeros((3, 0)), axis=1)
    return v.shape == (3,) and bool(np.all(np.isneginf(v)))


@case("relu float16", match="float16|float32|dtype")
def _():
    return P.relu(np.zeros(3, np.float16))


# ------------------------------------------------------------------ RMM
def rmm_params(dtype="float64"):
    t = np.abs(np.random.default_rng(0).standard_normal((2, 1, 1, 3, 3))).astype(dtype)
    return R.RMMParams(t, np.array([0.5, 0.5], dtype), 0.5, 0.1, (6, 6))


@case("RMMParams float16", match="float16|float32|dtype")
def _():
    return rmm_params("float16")


@case("rmm.render N=0", match="classes|N|at least")
def _():
    p = rmm_params()
    e = np.zeros(0, np.int64)
    return R.render(p, e, R.Latents(e, np.zeros((0, 2), np.int64), e))


@case("rmm.dcn_scores N=0", match="images")
def _():
    return R.dcn_scores(R.to_dcn(rmm_params()), np.zeros((0, 1, 6, 6)))


@case("rmm.class_posterior 1e30 float32", match="overflow|float32|large|finite|inf")
def _():
    v = R.class_posterior(rmm_params("float32"), imgs(3, "float32", scale=1e30))
    return v if finite(v) else "nonfinite"


@case("rmm.log_joint 1e30 float32", match="overflow|float32|large|finite|inf")
def _():
    p = rmm_params("float32")
    x = imgs(3, "float32", scale=1e30)
    c, lat, _ = R.map_estimate(p, x)
    v = R.log_joint(p, x, c, lat)
    return v if finite(v) else "nonfinite"


@case("rmm.max_sum_scores 3e38 float32", match="overflow|float32|large|finite|inf")
def _():
    v = R.max_sum_scores(rmm_params("float32"), imgs(3, "float32", scale=1e38))
    return v if finite(v) else "nonfinite"


@case("rmm.sample n=2.5", match=r"\bn\b")
def _():
    return R.sample(rmm_params(), 2.5)


# ------------------------------------------------------------------ learning terms, optimisers, steps
@case("balance_term [[120,0,0]]*2 float32 = log 3", expect="valid")
def _():
    v, g = Lrn.balance_term(np.array([[120, 0, 0]] * 2, np.float32))
    return abs(float(v) - np.log(3)) < 1e-5 and finite(g)


@case("balance_term [[1e4,0]]*3 float64", expect="valid")
def _():
    v, g = Lrn.balance_term(np.array([[1e4, 0]] * 3, np.float64))
    return abs(float(v) - np.log(2)) < 1e-9 and finite(g)


for kw in ({"lr": float("inf")}, {"lr": float("nan")}, {"eps": -1.0}, {"beta1": float("nan")}):
    @case(f"Adam({kw})", match="|".join(kw))
    def _(kw=kw):
        return Lrn.Adam(**kw)


@case("SGD(lr=inf)", match="lr")
def _():
    return Lrn.SGD(lr=float("inf"))


@case("SGD(momentum=nan)", match="momentum")
def _():
    return Lrn.SGD(momentum=float("nan"))


def _opt_setup():
    p = tiny()
    opt = Lrn.Adam()
    return p, opt, opt.init(Lrn.trainable(p))


@case("eg_step float labels 0.7", match="labels")
def _():
    p, opt, st = _opt_setup()
    return Lrn.eg_step(p, opt, st, imgs(2), np.array([0.7, 1.0]))


@case("backprop_step float labels 0.7", match="labels")
def _():
    p, opt, st = _opt_setup()
    return Lrn.backprop_step(p, opt, st, imgs(2), np.array([0.7, 1.0]))


@case("eg_step N=0", match="images")
def _():
    p, opt, st = _opt_setup()
    return Lrn.eg_step(p, opt, st, imgs(0), np.zeros(0, np.int64))


@case("backprop_step N=0", match="images")
def _():
    p, opt, st = _opt_setup()
    return Lrn.backprop_step(p, opt, st, imgs(0), np.zeros(0, np.int64))


@case("e_step N=0", match="images")
def _():
    return Lrn.e_step(tiny(), imgs(0), np.zeros(0, np.int64))


@case("cross_entropy float labels", match="labels")
def _():
    return Lrn.cross_entropy(np.zeros((2, 3)), np.array([0.5, 1.0]))


@case("eg_step labels out of range", match="labels")
def _():
    p, opt, st = _opt_setup()
    return Lrn.eg_step(p, opt, st, imgs(2), np.array([0, 5]))


def _cg(seed, k_cg, damping, data_seed=2):
    p = D.init_params(TINY, seed)
    rng = np.random.default_rng(data_seed)
    x = rng.standard_normal((8, 1, 6, 6))
    y = rng.integers(0, 2, 8)
    est = Lrn.e_step(p, x, y)
    rend = D.render(p, est.classes, est.latents)
    theta, info = Lrn.block_step(p, x, rend, "class_templates", k_cg=k_cg, damping=damping)
    q = p.replace(class_templates=theta)
    after = float(Lrn.reconstruction(x, D.render(q, est.classes, est.latents).image)[0])
    its = (info.rc_before,) + info.rc_iterates
    mono = all(b <= a * (1 + 1e-9) + 1e-15 for a, b in zip(its, its[1:]))
    return np.isfinite(after) and after <= info.rc_before * (1 + 1e-12) and mono


@case("block_step seed 2, k_cg=10, damping=0.3", expect="valid")
def _():
    return _cg(2, 10, 0.3)


@case("block_step seed 37, k_cg=30, damping 0", expect="valid")
def _():
    return _cg(37, 30, 0.0)


@case("block_step seed 5, k_cg=200, damping 0", expect="valid")
def _():
    return _cg(5, 200, 0.0)


@case("block_step k_cg=0", match="k_cg")
def _():
    return _cg(2, 0, 0.0)


# ------------------------------------------------------------------ TrainConfig
for kw, pat in (({"n_train": -1}, "n_train"), ({"n_eval": 0}, "n_eval"), ({"n_eval": -9990}, "n_eval"),
                ({"lr": float("inf")}, "lr"), ({"lr": -1.0}, "lr"), ({"epochs": -1}, "epochs"),
                ({"batch_size": 2.5}, "batch_size"), ({"seed": -1}, "seed"), ({"k_cg": 0}, "k_cg"),
                ({"cg_eta": 0.0}, "cg_eta"), ({"monitor_size": -5}, "monitor_size"), ({"momentum": 1.5}, "momentum"),
                ({"eval_batch": 0}, "eval_batch"), ({"cg_damping": -1.0}, "cg_damping"),
                ({"dtype": "float16"}, "dtype"), ({"backend": "torch"}, "backend")):
    @case(f"TrainConfig({kw})", match=pat)
    def _(kw=kw):
        return cfg(**kw)


def _finish_ok(res):
    return res.log["finished"]


@case("train backend=cupy without CuPy", match="cupy|CuPy|backend")
def _():
    return Lrn.train(cfg(backend="cupy"), syn(), TMP / "cupy", progress=False)


@case("train n_train larger than the data", match="n_train")
def _():
    return Lrn.train(cfg(n_train=10_000), syn(), TMP / "ntrain", progress=False).params


@case("train n_eval larger than the data", match="n_eval")
def _():
    return Lrn.train(cfg(n_eval=10_000), syn(), TMP / "neval", progress=False).params


@case("train out is an existing file", match="out|file|folder|director")
def _():
    f = TMP / "afile"
    f.write_text("x")
    return Lrn.train(cfg(), syn(), f, progress=False)


@case("train out ''", match="out|folder|empty")
def _():
    cwd = os.getcwd()
    d = TMP / "emptyout"
    d.mkdir()
    os.chdir(d)
    try:
        Lrn.train(cfg(), syn(), "", progress=False)
        if (d / "log.json").exists():
            return "wrote into the current folder"
    finally:
        os.chdir(cwd)
    return "accepted"


@case("train: unrelated log.json in out", match="log.json|another|not")
def _():
    d = TMP / "unrelated"
    d.mkdir()
    (d / "log.json").write_text('{"mine": 1}\n')
    try:
        Lrn.train(cfg(), syn(), d, progress=False)
    finally:
        if (d / "log.json").read_text() != '{"mine": 1}\n':
            raise Lost("unrelated log.json overwritten")
    return "accepted"


@case("train: divergence (lr=1e7, sgd) keeps the last good checkpoint", match=r"diverg|epoch \d+.*step")
def _():
    import dataclasses
    d = TMP / "diverge3"
    extra = ({"checkpoint_every_steps": 1}
             if "checkpoint_every_steps" in {f.name for f in dataclasses.fields(Lrn.TrainConfig)} else {})
    c = cfg(model="drmm", epochs=3, lr=1e7, optimizer="sgd", momentum=0.0, **extra)
    try:
        Lrn.train(c, syn(), d, progress=False)
    finally:
        for p in (d / "checkpoints").glob("*.npz"):
            try:
                ck = Lrn.load_checkpoint(p)
            except Exception as exc:
                raise Lost(f"{p.name} unreadable: {exc}")
            if not all(finite(a) for a in Lrn.trainable(ck.params).values()):
                raise Lost(f"{p.name} holds non-finite parameters")
    return "trained through"


@case("train: diverging run (Adam lr=1e6) error names epoch and step", match=r"epoch \d+.*step \d+")
def _():
    return Lrn.train(cfg(model="drmm", epochs=2, lr=1e6), syn(), TMP / "div4", progress=False)


@case("evaluate on 0 images", match="images|empty|nothing")
def _():
    r = Lrn.evaluate(tiny(), np.zeros((0, 1, 6, 6)), np.zeros(0, np.int64))
    return r


@case("train with NaN images in the data", match="images|NaN")
def _():
    d = syn()
    d.train.images[0, 0, 0, 0] = np.nan
    return Lrn.train(cfg(), d, TMP / "nanimg", progress=False)


@case("train --labels 15 on 10 images", match="n_labels|labels")
def _():
    return Lrn.train(cfg(model="drmm", n_labels=15, n_train=10), syn(), TMP / "lab", progress=False)


# ------------------------------------------------------------------ concurrency
RUNNER = r"""
import sys, json
sys.path.insert(0, {root!r})
from drmm_ref.drmm import Layer, Network
from drmm_ref.learning import TrainConfig, synthetic_digits, train
net = Network((1, 28, 28), (Layer(4, 5, 0, 2), Layer(8, 5, 0, 2)), n_classes=10, name="narrow")
cfg = TrainConfig(model="dcn", net=net, epochs={epochs}, batch_size=10, data="synthetic", lr={lr}, monitor_size=10)
train(cfg, synthetic_digits(300, 20, 20, seed=0), {out!r}, progress=False)
"""


@case("two runs with different configurations into one folder (concurrent)", match="another|lock|running|configuration")
def _():
    out = TMP / "concurrent"
    a = subprocess.Popen([sys.executable, "-c", RUNNER.format(root=str(ROOT), epochs=3, lr=0.01, out=str(out))],
                         stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    b = subprocess.run([sys.executable, "-c", RUNNER.format(root=str(ROOT), epochs=3, lr=0.05, out=str(out))],
                       stderr=subprocess.PIPE, text=True)
    a.wait()
    log = json.loads((out / "log.json").read_text())
    ck = Lrn.load_checkpoint(Lrn.latest_checkpoint(out))
    if a.returncode != 0:
        raise Lost("first run failed: " + a.stderr[-300:])
    if log["config"]["lr"] != 0.01 or ck.config["lr"] != 0.01 or not log["finished"]:
        raise Lost(f"the folder holds lr={log['config']['lr']} / {ck.config['lr']}")
    if b.returncode == 0:
        return "second run exited 0"
    last = b.stderr.strip().splitlines()[-1]
    raise ValueError(last)


# ------------------------------------------------------------------ checkpoints and files
def _ckpt():
    d = TMP / "ck"
    if not (d / "checkpoints" / "epoch-002.npz").exists():
        Lrn.train(cfg(epochs=2), syn(), d, progress=False)
    return d / "checkpoints" / "epoch-002.npz"


def _edit_meta(path, edit):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: np.array(z[k]) for k in z.files}
    meta = json.loads(str(arrays.pop("__meta__")))
    edit(meta)
    out = path.parent / ("edited-" + path.name)
    with open(out, "wb") as fh:
        np.savez(fh, __meta__=np.asarray(json.dumps(meta)), **arrays)
    return out


@case("checkpoint meta without history", match="checkpoint|history|corrupt")
def _():
    return Lrn.load_checkpoint(_edit_meta(_ckpt(), lambda m: m.pop("history")))


@case("checkpoint meta epoch edited 2 -> 7 then resume", match="checkpoint|checksum|epoch|corrupt")
def _():
    src = _ckpt()
    d = TMP / "ck7"
    (d / "checkpoints").mkdir(parents=True, exist_ok=True)
    e = _edit_meta(src, lambda m: m.__setitem__("epoch", 7))
    e.rename(d / "checkpoints" / "epoch-007.npz")
    res = Lrn.train(cfg(epochs=7), syn(), d, progress=False)
    return "resumed as done" if res.log else res


@case("checkpoint config with a field from a newer version", match="checkpoint|version|field|newer")
def _():
    src = _ckpt()
    d = TMP / "cknew"
    (d / "checkpoints").mkdir(parents=True, exist_ok=True)
    e = _edit_meta(src, lambda m: m["config"].__setitem__("future_field", 1))
    e.rename(d / "checkpoints" / "epoch-002.npz")
    return Lrn.train(cfg(epochs=3), syn(), d, progress=False)


@case("truncated checkpoint", match="checkpoint|corrupt|unreadable")
def _():
    p = TMP / "trunc.npz"
    p.write_bytes(_ckpt().read_bytes()[:5000])
    return Lrn.load_checkpoint(p)


@case("save_params onto a directory", match="folder|director|path")
def _():
    d = TMP / "adir"
    d.mkdir(exist_ok=True)
    return drmm_ref.io.save_params(d, tiny())


@case("load_params of a directory", match="file|folder|director")
def _():
    return drmm_ref.io.load_params(TMP)


@case("save_checkpoint onto a directory", match="folder|director|path")
def _():
    d = TMP / "adir2"
    d.mkdir(exist_ok=True)
    ck = Lrn.load_checkpoint(_ckpt())
    return Lrn.save_checkpoint(d, ck)


@case("load_params of a forged file with NaN (valid checksum)", match="NaN|finite|inf")
def _():
    from drmm_ref import io as IO
    from drmm_ref.backend import array_checksum
    p = TMP / "ok.npz"
    IO.save_params(p, tiny())
    with np.load(p, allow_pickle=False) as z:
        arrays = {k: np.array(z[k]) for k in z.files}
    meta = json.loads(str(arrays.pop("__meta__")))
    arrays["filters_1"].flat[0] = np.nan
    meta["checksum"] = array_checksum(arrays)
    with open(p, "wb") as fh:
        np.savez(fh, __meta__=np.asarray(json.dumps(meta)), **arrays)
    q = IO.load_params(p)
    return D.bottom_up(q, imgs()).scores


# ------------------------------------------------------------------ MNIST
def _fake_mnist():
    from drmm_ref.data import mnist as M
    rng = np.random.default_rng(0)
    arrays = {"train_images": rng.integers(0, 256, (60, 28, 28), dtype=np.uint8),
              "train_labels": rng.integers(0, 10, 60, dtype=np.uint8),
              "test_images": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
              "test_labels": rng.integers(0, 10, 10, dtype=np.uint8)}
    M.CANONICAL_SHA256 = {k: M._sha256(v) for k, v in arrays.items()}
    M.EXPECTED_SHAPES = {k: v.shape for k, v in arrays.items()}
    return M, arrays


def _readonly(M):
    import drmm_ref._files as F

    def ro(path, write):
        raise OSError(errno.EROFS, "Read-only file system", str(path))
    orig = (M.atomic_write, M.atomic_write_text, F.atomic_write)
    M.atomic_write = ro
    M.atomic_write_text = lambda p, t: ro(p, None)
    return orig


def _restore(M, orig):
    import drmm_ref._files as F
    M.atomic_write, M.atomic_write_text, F.atomic_write = orig


@case("MNIST: valid --mnist-path + read-only cache", expect="valid")
def _():
    M, arrays = _fake_mnist()
    src = TMP / "mn.npz"
    np.savez(src, **arrays)
    orig = _readonly(M)
    try:
        a, origin = M.load_uint8(src, cache_dir=TMP / "ro-cache", offline=True, progress=False)
    finally:
        _restore(M, orig)
    return all(np.array_equal(a[k], arrays[k]) for k in arrays)


@case("MNIST: successful download + read-only cache", expect="valid")
def _():
    M, arrays = _fake_mnist()
    orig = _readonly(M)
    od = M._download_idx
    M._download_idx = lambda progress: dict(arrays)
    try:
        a, origin = M.load_uint8(None, cache_dir=TMP / "ro-cache2", offline=False, progress=False)
    finally:
        _restore(M, orig)
        M._download_idx = od
    return all(np.array_equal(a[k], arrays[k]) for k in arrays)


@case("MNIST: corrupt cache in a read-only folder", match="corrupt|checksum|not a|unreadable|cache")
def _():
    M, arrays = _fake_mnist()
    c = M._cache_file(TMP / "ro-cache3")
    c.parent.mkdir(parents=True)
    c.write_bytes(b"garbage")
    orig_unlink = Path.unlink

    def unlink(self, missing_ok=False):
        raise OSError(errno.EROFS, "Read-only file system", str(self))
    Path.unlink = unlink
    try:
        M.load_uint8(None, cache_dir=TMP / "ro-cache3", offline=True, progress=False)
    except Exception as exc:
        if "corrupt" in str(exc) or "not a" in str(exc) or "BadZip" in str(exc) or "checksum" in str(exc):
            raise ValueError(str(exc)) from None
        raise
    finally:
        Path.unlink = orig_unlink
    return "loaded"


for label, content, suffix in (("garbage .pkl.gz", b"garbage", ".pkl.gz"),
                               ("gzip of garbage", gzip.compress(b"garbage"), ".pkl.gz"),
                               ("pickle of a wrong structure", gzip.compress(pickle.dumps((1, 2))), ".pkl.gz"),
                               ("truncated gzip", gzip.compress(b"x" * 1000)[:20], ".gz"),
                               ("npz that is not a zip", b"PK\x03\x04junk", ".npz")):
    @case(f"MNIST: user file {label}", match="bad-mnist")
    def _(content=content, suffix=suffix):
        M, _ = _fake_mnist()
        p = TMP / f"bad-mnist{suffix}"
        p.write_bytes(content)
        return M.load_uint8(p, cache_dir=TMP / "c4", offline=True, progress=False)


# ------------------------------------------------------------------ command line (subprocesses)
def cli(args, timeout=120, **kw):
    return subprocess.run([sys.executable, "-m", "drmm_ref.cli"] + args, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, **kw)


BASE = ["train", "--model", "dcn", "--data", "synthetic", "--no-progress", "--net", "small2"]
SYN = BASE + ["--n-train", "40", "--n-eval", "20", "--batch-size", "20"]


def cli_case(name, args, flag):
    @case(f"CLI {name}", match=flag)
    def _():
        r = cli(args)
        if r.returncode == 0:
            return f"exit 0: {r.stdout.strip().splitlines()[-1:]}"
        err = r.stderr.strip()
        if "Traceback" in err or len(err.splitlines()) > 3:
            raise RuntimeError(f"traceback / {len(err.splitlines())} lines: {err.splitlines()[-1][:150]}")
        if r.returncode != 2:
            raise RuntimeError(f"exit {r.returncode}: {err[:150]}")
        raise ValueError(err)


cli_case("--epochs -1", SYN + ["--epochs", "-1", "--out", str(TMP / "c1")], "--epochs")
cli_case("--labels 15 on 10 images", ["train", "--model", "drmm", "--data", "synthetic", "--n-train", "10",
                                       "--labels", "15", "--epochs", "1", "--no-progress", "--out",
                                       str(TMP / "c2")], "--labels")
cli_case("--seed -1", SYN + ["--epochs", "1", "--seed", "-1", "--out", str(TMP / "c3")], "--seed")
cli_case("--n-train -1", ["train", "--model", "dcn", "--data", "synthetic", "--n-train", "-1", "--epochs", "1",
                          "--no-progress", "--out", str(TMP / "c4")], "--n-train")
cli_case("--n-eval 0", BASE + ["--n-train", "40", "--epochs", "1", "--n-eval", "0", "--out", str(TMP / "c5")],
         "--n-eval")
cli_case("--backend cupy", SYN + ["--epochs", "1", "--backend", "cupy", "--out", str(TMP / "c6")],
         "--backend|cupy|CuPy")
cli_case("--lr inf", SYN + ["--epochs", "1", "--lr", "inf", "--out", str(TMP / "c7")], "--lr")
cli_case("--out ''", SYN + ["--epochs", "1", "--out", ""], "--out")
(TMP / "cfile").write_text("x")
cli_case("--out FILE", SYN + ["--epochs", "1", "--out", str(TMP / "cfile")], "--out|cfile")
cli_case("--k-cg 0", SYN + ["--epochs", "1", "--k-cg", "0", "--out", str(TMP / "c8")], "--k-cg")
cli_case("--batch-size 0", SYN + ["--epochs", "1", "--batch-size", "0", "--out", str(TMP / "c9")], "--batch-size")
(TMP / "corrupt.npz").write_bytes(b"PK\x03\x04 not a checkpoint")
cli_case("evaluate a corrupt checkpoint", ["evaluate", str(TMP / "corrupt.npz")], "corrupt.npz")
cli_case("evaluate a missing checkpoint", ["evaluate", str(TMP / "missing.npz")], "missing.npz")


@case("CLI Ctrl-C during training", match="checkpoint|interrupt")
def _():
    out = TMP / "sigint"
    p = subprocess.Popen([sys.executable, "-m", "drmm_ref.cli"] + BASE + ["--n-eval", "20", "--batch-size", "20",
                         "--n-train", "4000", "--epochs", "3", "--out", str(out)],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (out / "checkpoints" / "epoch-001.npz").exists() and time.time() - t0 < 100:
        time.sleep(0.2)
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    err = err.strip()
    if "Traceback" in err or len(err.splitlines()) > 3:
        raise RuntimeError(f"{len(err.splitlines())} lines on Ctrl-C")
    raise ValueError(err)


@case("validation --backend cupy without CuPy", match="cupy|CuPy")
def _():
    out = TMP / "val"
    r = subprocess.run([sys.executable, "-m", "validation", "--backend", "cupy", "--only", "adjoint-identities",
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    if (out / "adjoint-identities.json").exists():
        rec = json.loads((out / "adjoint-identities.json").read_text())
        if rec["status"] == "fail":
            return "recorded FAIL"
    err = r.stderr.strip()
    if "Traceback" in err or len(err.splitlines()) > 3:
        raise RuntimeError("traceback")
    if r.returncode == 0:
        return "exit 0"
    raise ValueError(err)


# ------------------------------------------------------------------ run
def main():
    only = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else None
    results = []
    for name, expect, match, fn in CASES:
        if only and only not in name:
            continue
        signal.alarm(240)
        t0 = time.time()
        try:
            ret = fn()
            if expect == "valid" or expect == "valid_or_error":
                outcome = "valid" if ret is True else "silent"
                detail = repr(ret)[:100]
            else:
                outcome, detail = "silent", f"returned {type(ret).__name__}: {repr(ret)[:80]}"
        except Lost as exc:
            outcome, detail = "lost", str(exc)
        except TimeoutError:
            outcome, detail = "hang", ""
        except Exception as exc:  # noqa: BLE001
            if not (isinstance(exc, (ValueError, TypeError)) or type(exc).__module__.startswith("drmm_ref")):
                outcome, detail = "unexpected", (f"{type(exc).__name__}: "
                                                 f"{str(exc).splitlines()[0][:160] if str(exc) else ''}")
                results.append({"case": name, "outcome": outcome, "detail": detail,
                                "seconds": round(time.time() - t0, 2)})
                print(f"{outcome:10s} {name}: {detail}", flush=True)
                signal.alarm(0)
                continue
            msg = str(exc).splitlines()[0] if str(exc) else ""
            if expect == "valid":
                outcome = "unexpected"
            elif match and not re.search(match, str(exc)):
                outcome = "unexpected"
            else:
                outcome = "clear"
            detail = f"{type(exc).__name__}: {msg[:160]}"
        except Exception as exc:  # noqa: BLE001
            outcome, detail = "unexpected", (f"{type(exc).__name__}: "
                                             f"{str(exc).splitlines()[0][:160] if str(exc) else ''}")
        finally:
            signal.alarm(0)
        results.append({"case": name, "outcome": outcome, "detail": detail, "seconds": round(time.time() - t0, 2)})
        print(f"{outcome:10s} {name}: {detail}", flush=True)
    counts = {}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    print(json.dumps(counts))
    if "--json" in sys.argv:
        Path(sys.argv[sys.argv.index("--json") + 1]).write_text(json.dumps({"counts": counts, "results": results},
                                                                          indent=1))


def _alarm(signum, frame):
    raise TimeoutError


signal.signal(signal.SIGALRM, _alarm)
if __name__ == "__main__":
    main()
