"""Figure: what each layer's latents carry in a trained DRMM, and top-down reconstructions (SPEC §2, §5).

Two panels, from one trained model:

(a) **One layer's nuisances varied, the others held.** A test digit's bottom-up latents ``g*`` and its
    class ``c*`` give the base rendering ``mu_{c*, g*}``. Each row then redraws one layer's latents --
    its switches ``a^(l) ~ Bernoulli(pi_on^(l))`` or its positions ``t^(l)`` uniform in their
    pooling windows -- and renders the same class with every other latent held, six draws a row. Rows
    whose renderings barely change show a layer carrying little of the image; position rows move
    strokes locally (translation nuisance), switch rows add or remove parts.
(b) **Reconstructions.** Test digits beside their top-down reconstructions ``x_hat`` (the class the
    DCN decides, rendered through the bottom-up latents), with the decided class.

The model: ``--checkpoint PATH`` (a training checkpoint ``<run>/checkpoints/epoch-<k>.npz`` or a
parameter file written by :func:`drmm_ref.io.save_params` whose metadata holds the run's ``config``;
:func:`drmm_ref.io.load_params` reads both); by
default the first found of: the 100-label ``ssl-mnist`` DRMM trained 5 epochs
(``conv-small-drmm-ce-rc-nn-h-nl100-seed0-epochs5``, the best model of that claim) under ``$DRMM_REF_RUNS``,
then its committed parameters (``results/runs/ssl-mnist/<that run>/params-epoch-005.npz``), then the same
run after 1 epoch under ``$DRMM_REF_RUNS``; with ``--quick`` and none at hand, a ``small2`` DRMM trained
for two EG epochs on 1,000 images (MNIST cache, else the synthetic stand-in) in a temporary folder.
Writes ``fig_rendered_latents.png`` and ``.pdf`` to ``figures/out/`` (``--out``).

Usage: ``python figures/fig_rendered_latents.py [--checkpoint PATH] [--out DIR] [--quick] [--seed S]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "figures"))

from _common import save  # noqa: E402
from drmm_ref import to_numpy  # noqa: E402
from drmm_ref import drmm as D  # noqa: E402
from drmm_ref.io import DRMMFileError, load_params  # noqa: E402
from drmm_ref.learning import TrainConfig, latest_checkpoint, mnist_or_synthetic, train  # noqa: E402

DEFAULT_RUNS = ("conv-small-drmm-ce-rc-nn-h-nl100-seed0-epochs5", "conv-small-drmm-ce-rc-nn-h-nl100-seed0")
COMMITTED = ROOT / "results" / "runs" / "ssl-mnist" / DEFAULT_RUNS[0] / "params-epoch-005.npz"
DRAWS = 6


def load_model(path: Path):
    """(params, training config dict, description) from a training checkpoint or a parameter file.

    Both are read by :func:`drmm_ref.io.load_params`; the run's configuration comes from a checkpoint's
    own fields or from a parameter file's metadata.
    """
    path = Path(path)
    try:
        params, meta = load_params(path, return_metadata=True)
    except DRMMFileError as exc:
        raise SystemExit(f"--checkpoint: {exc}") from None
    if not isinstance(meta.get("config"), dict):
        raise SystemExit(f"{path}: a parameter file without the training 'config' in its metadata; "
                         "pass a training checkpoint instead")
    run = meta.get("run") or (path.parent.parent.name if path.parent.name == "checkpoints" else path.stem)
    return params, meta["config"], f"{run}, epoch {meta.get('epoch', '?')}"


def find_model(checkpoint: Path | None, quick: bool, seed: int):
    """(params, test images, test labels, description)."""
    if checkpoint is None:
        from validation.ssl_mnist import runs_root

        found = [latest_checkpoint(runs_root() / DEFAULT_RUNS[0]), COMMITTED if COMMITTED.is_file() else None,
                 latest_checkpoint(runs_root() / DEFAULT_RUNS[1])]
        checkpoint = next((c for c in found if c is not None), None)
    if checkpoint is not None:
        params, config, description = load_model(checkpoint)
        cfg = TrainConfig.from_dict(config)
        data, is_mnist = mnist_or_synthetic(None if cfg.data == "mnist" else cfg.n_train, 200, seed=cfg.seed)
        if not is_mnist:  # the MNIST cache is absent: say that the digits shown are the synthetic stand-in
            description += "; images: synthetic stand-in, not MNIST"
        return params, data.test.images, data.test.labels, description
    if not quick:
        raise SystemExit(f"no checkpoint given and neither the run {DEFAULT_RUNS[0]} (or {DEFAULT_RUNS[1]}) nor "
                         f"{COMMITTED} found; pass --checkpoint PATH, or --quick to train a small model first")
    data, is_mnist = mnist_or_synthetic(1000, 200, seed=seed)
    cfg = TrainConfig(model="drmm", net="small2", epochs=2, n_train=1000, n_eval=200, seed=seed, monitor_size=128,
                      data="mnist" if is_mnist else "synthetic")
    with tempfile.TemporaryDirectory() as tmp:
        res = train(cfg, data, tmp, progress=False)
    description = f"quick small2 DRMM, 2 EG epochs on 1,000 images ({data.source})"
    return res.params, data.test.images, data.test.labels, description


def vary_layer(params, latents, layer: int, kind: str, rng: np.random.Generator, draws: int):
    """``draws`` copies of one example's latents with layer ``layer``'s switches or positions redrawn."""
    xp = params.xp
    positions = [to_numpy(t) for t in latents.positions]
    switches = [to_numpy(a) for a in latents.switches]
    pos = [np.repeat(t, draws, axis=0) for t in positions]
    sw = [np.repeat(a, draws, axis=0) for a in switches]
    i = layer - 1
    if kind == "switches":
        on = float(to_numpy(params.switch_prior)[i])
        sw[i] = rng.random(sw[i].shape) < on
    else:
        p = params.net.layers[i].pool
        pos[i] = rng.integers(0, p * p, size=pos[i].shape).astype(np.int64)
    return D.Latents(tuple(xp.asarray(t) for t in pos), tuple(xp.asarray(a) for a in sw))


def _img(ax, x, title=None):
    x = np.asarray(x)[0]
    lim = float(np.max(np.abs(x))) or 1.0
    ax.imshow(x, cmap="gray_r" if x.min() >= 0 else "RdBu_r", vmin=-lim if x.min() < 0 else 0, vmax=lim)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def plot(params, images, labels, description: str, out: Path, seed: int = 0) -> list[Path]:
    xp = params.xp
    dt = to_numpy(params.class_templates).dtype
    x = xp.asarray(np.asarray(to_numpy(images))[:8].astype(dt))
    fw = D.bottom_up(params, x)
    recon = to_numpy(D.top_down(params, fw).image)
    classes = to_numpy(fw.classes)
    rng = np.random.default_rng(seed)
    net = params.net
    rows = [(l, k) for l in range(1, net.L + 1) for k in ("switches", "positions")
            if k == "switches" or net.layers[l - 1].pool > 1]
    one = fw.latents.take(slice(0, 1))
    c = xp.asarray(np.repeat(classes[:1], DRAWS))
    base = to_numpy(D.render(params, xp.asarray(classes[:1]), one).image)[0]

    fig = plt.figure(figsize=(11, 1.25 * (len(rows) + 3)))
    grid = fig.add_gridspec(len(rows) + 3, DRAWS + 2 + 9, wspace=0.15, hspace=0.45)
    ax = fig.add_subplot(grid[0, 0])
    _img(ax, to_numpy(x)[0], "input")
    ax = fig.add_subplot(grid[0, 1])
    _img(ax, base, f"render c={classes[0]}")
    for r, (l, kind) in enumerate(rows, start=1):
        lat = vary_layer(params, one, l, kind, rng, DRAWS)
        rend = to_numpy(D.render(params, c, lat).image)
        change = float(np.linalg.norm(rend - base[None]) / (np.sqrt(DRAWS) * max(np.linalg.norm(base), 1e-12)))
        ax = fig.add_subplot(grid[r, 0])
        ax.axis("off")
        ax.text(1.0, 0.5, f"layer {l}\n{kind}\nchange {change:.2f}", ha="right", va="center", fontsize=7,
                transform=ax.transAxes)
        for j in range(DRAWS):
            _img(fig.add_subplot(grid[r, 1 + j]), rend[j])
    # (b) reconstructions, two rows of 8 at the right
    for j in range(8):
        _img(fig.add_subplot(grid[0 + 2 * (j // 4), DRAWS + 3 + 2 * (j % 4)]), to_numpy(x)[j],
             f"input (label {int(np.asarray(to_numpy(labels))[j])})")
        _img(fig.add_subplot(grid[1 + 2 * (j // 4), DRAWS + 3 + 2 * (j % 4)]), recon[j], f"x_hat (c={classes[j]})")
    fig.suptitle(f"(a) one layer's latents redrawn, others held; (b) top-down reconstructions -- {description}",
                 fontsize=9)
    return save(fig, out, "fig_rendered_latents", bbox_inches="tight")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="training checkpoint (.npz) of a DRMM run, or a parameter file with the run's config")
    parser.add_argument("--out", type=Path, default=ROOT / "figures" / "out",
                        help="output folder (default figures/out)")
    parser.add_argument("--quick", action="store_true", help="train a small model first if no checkpoint is found")
    parser.add_argument("--seed", type=int, default=0, help="seed of the redrawn latents (and of a --quick model)")
    args = parser.parse_args(argv)
    params, images, labels, description = find_model(args.checkpoint, args.quick, args.seed)
    for p in plot(params, images, labels, description, args.out, args.seed):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
