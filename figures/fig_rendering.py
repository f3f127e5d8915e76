"""Figure: coarse-to-fine rendering in a DRMM, and top-down reconstructions (SPEC §2; paper Fig. 1-2 idea).

Three panels:

(a) samples rendered coarse to fine. Column "level l" carries the sample's own partial rendering
    ``z^(l)`` to image space with the *prior-expected* lower renderers
    (``E[Lambda^(m)] z = pi_on^(m) conv2d_transpose(spread(z) / p_m^2, W^(m), q_m)``, m = l..1,
    :func:`drmm_ref.drmm.expected_rendering`), so each column shows what levels l..L have decided
    and the lower levels only blur in expectation; carrying it down with the sample's own latents
    would give the same image in every column. Then the image template ``mu_{c,g} = z^(0)`` and the
    noisy sample.
(b) one sample's partial renderings ``z^(L), ..., z^(1)`` as channel maps (first channels).
(c) inputs beside their top-down reconstructions ``x_hat`` from the bottom-up latents and the DCN class.

Without ``--checkpoint`` it uses seeded random parameters satisfying D1's condition (an untrained
model: the pictures show the mechanism, not digits); with ``--checkpoint PATH`` (a training
checkpoint, ``<run>/checkpoints/epoch-<k>.npz``, or a parameter file of :func:`drmm_ref.io.save_params`:
:func:`drmm_ref.io.load_params` reads both) it shows that model. Writes ``fig_rendering.png`` and ``.pdf``.

Usage::

    python figures/fig_rendering.py --quick
    python figures/fig_rendering.py --checkpoint runs/conv-small.npz --out figures/out
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from drmm_ref import drmm as D  # noqa: E402
from drmm_ref import to_numpy  # noqa: E402
from drmm_ref.io import DRMMFileError, load_params  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "out"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (smoke run)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a training checkpoint (<run>/checkpoints/epoch-<k>.npz) or a parameter file")
    parser.add_argument("--preset", default="small2", choices=sorted(D.PRESETS),
                        help="network for random parameters when no checkpoint is given (default small2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default figures/out)")
    return parser


def _show(ax, img, title=None, cmap="gray", symmetric=False):
    img = np.asarray(img)
    if img.ndim == 3:
        img = img[0] if img.shape[0] == 1 else np.moveaxis(img[:3], 0, -1)
    if symmetric:
        lim = float(np.max(np.abs(img))) or 1.0
        ax.imshow(img, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    else:
        ax.imshow(img, cmap=cmap, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def make_figure(params, n_samples: int, seed: int):
    net = params.net
    s = D.sample(params, n_samples, seed)
    levels = list(range(net.L, 0, -1))
    carried = {l: to_numpy(D.expected_rendering(params, s.rendering.renderings[l], l)) for l in levels}
    fw = D.bottom_up(params, s.images)
    rec = to_numpy(D.top_down(params, fw).reconstruction)
    images, clean = to_numpy(s.images), to_numpy(s.rendering.image)
    classes, predicted = to_numpy(s.classes), to_numpy(fw.classes)

    n_cols_a = len(levels) + 2
    n_maps = 6
    fig = plt.figure(figsize=(max(9.0, 1.25 * (n_cols_a + 3)), 1.3 * n_samples + 1.25 * net.L + 1.6),
                     layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[n_samples, net.L + 0.6])
    left, right = top.subfigures(1, 2, width_ratios=[n_cols_a, 3])
    left.suptitle("(a) coarse to fine: z(l) carried to image space\nwith the prior-expected lower renderers",
                  fontsize=9)
    axes = left.subplots(n_samples, n_cols_a, squeeze=False)
    for i in range(n_samples):
        for j, l in enumerate(levels):
            _show(axes[i, j], carried[l][i], f"level {l}" if i == 0 else None, symmetric=True)
        _show(axes[i, -2], clean[i], "z(0) = mu_{c,g}" if i == 0 else None, symmetric=True)
        _show(axes[i, -1], images[i], "+ noise" if i == 0 else None, symmetric=True)
        axes[i, 0].set_ylabel(f"class {classes[i]}", fontsize=8)
    right.suptitle("(c) input | top-down x_hat\n(bottom-up latents, DCN class)", fontsize=9)
    axes_c = right.subplots(n_samples, 2, squeeze=False)
    for i in range(n_samples):
        _show(axes_c[i, 0], images[i], None, symmetric=True)
        _show(axes_c[i, 1], rec[i], None, symmetric=True)
        axes_c[i, 1].set_ylabel(f"DCN class {predicted[i]}", fontsize=7)
        axes_c[i, 1].yaxis.set_label_position("right")
    bottom.suptitle("(b) partial renderings z(l) of the first sample, first channels (red > 0 > blue)", fontsize=9)
    axes_b = bottom.subplots(net.L, n_maps, squeeze=False)
    for r, l in enumerate(levels):
        z = to_numpy(s.rendering.renderings[l])[0]
        for k in range(n_maps):
            ax = axes_b[r, k]
            if k < z.shape[0]:
                _show(ax, z[k], symmetric=True)
            else:
                ax.axis("off")
        axes_b[r, 0].set_ylabel(f"z({l}) {z.shape[1]}x{z.shape[2]}", fontsize=8)
    case = D.relaxation_report(params).case
    fig.suptitle(f"DRMM rendering on {net.name!r} ({case} max-sum case)", fontsize=10)
    return fig


def main(argv=None) -> list[Path]:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.checkpoint is not None:
        try:
            params = load_params(args.checkpoint)
        except DRMMFileError as exc:
            raise SystemExit(f"--checkpoint: {exc}") from None
    else:
        net = D.preset(args.preset)
        params = D.init_params(net, args.seed, d1_condition=True, switch_prior=0.5, noise_variance=1e-4)
    fig = make_figure(params, 3 if args.quick else 6, args.seed + 1)
    args.out.mkdir(parents=True, exist_ok=True)
    paths = [args.out / "fig_rendering.png", args.out / "fig_rendering.pdf"]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    plt.close(fig)
    for p in paths:
        print(p)
    return paths


if __name__ == "__main__":
    main()
