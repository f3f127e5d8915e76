"""The ``drmm-ref`` command line.

* ``drmm-ref info`` prints the installed versions and which array backends are usable;
* ``drmm-ref train`` trains a DRMM by EG or the same network as a DCN by backprop (SPEC §3) and
  writes a JSON log and per-epoch checkpoints (rerunning the same command resumes);
* ``drmm-ref evaluate CHECKPOINT`` reports a checkpoint's validation and test error.

Nothing in the library imports this module.

Errors (``docs/guarantees.md``): a bad value is refused by the parser (``--epochs -1``,
``--lr inf``: one line naming the flag, exit status 2); what can only be found out later (the
folder belongs to another run, a damaged checkpoint or MNIST file, more labels than images, a
diverging run) is one line naming the flag or the file, exit status 2, before any data are loaded
where possible. Ctrl-C prints one line saying where the last checkpoint is (exit status 130).
``DRMM_REF_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import platform
import re
import sys


def _info(_args) -> int:
    import numpy
    import scipy

    import drmm_ref

    print(f"drmm_ref {drmm_ref.__version__} (Patel, Nguyen & Baraniuk, NIPS 2016; arXiv:1612.01936)")
    print(f"python {platform.python_version()} on {platform.system()} {platform.machine()}")
    print(f"numpy {numpy.__version__}, scipy {scipy.__version__}")
    for name in ("array_api_strict", "cupy", "torch"):
        if importlib.util.find_spec(name) is None:
            print(f"{name}: not installed")
            continue
        if name == "cupy":
            try:
                import cupy

                ok = cupy.cuda.is_available()
                print(f"cupy {cupy.__version__}: CUDA device {'available' if ok else 'NOT available'}")
            except Exception as exc:  # a broken CUDA install is reported, not raised
                print(f"cupy: installed but unusable ({type(exc).__name__}: {exc})")
        else:
            mod = __import__(name)
            print(f"{name} {getattr(mod, '__version__', '?')}")
    return 0


# ----------------------------------------------------------------------------------- value types
def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _number(*, positive: bool = False, below_one: bool = False, up_to_one: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if positive and not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {value:g}")
        if not positive and value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {value:g}")
        if below_one and not value < 1:
            raise argparse.ArgumentTypeError(f"must be < 1, got {value:g}")
        if up_to_one and not value <= 1:
            raise argparse.ArgumentTypeError(f"must be <= 1, got {value:g}")
        return value

    parse.__name__ = "number"
    return parse


def _schedule(text: str) -> str:
    from drmm_ref.learning.optim import lr_schedule

    try:
        return lr_schedule(text).spec
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_schedule.__name__ = "schedule"


def _folder(text: str) -> str:
    if text.strip() == "":
        raise argparse.ArgumentTypeError("must name a folder, got an empty string")
    return text


#: Configuration fields as they appear in the library's messages, and the flag that sets each.
_FLAGS = {"n_labels": "--labels", "n_train": "--n-train", "n_eval": "--n-eval", "batch_size": "--batch-size",
          "label_seed": "--label-seed", "init_from": "--init-from", "k_cg": "--k-cg", "cg_eta": "--cg-eta",
          "cg_blocks": "--cg-blocks", "lr": "--lr", "epochs": "--epochs", "seed": "--seed",
          "momentum": "--momentum", "checkpoint_every_steps": "--checkpoint-every-steps",
          "checkpoint_every_seconds": "--checkpoint-every-minutes", "backend": "--backend", "dtype": "--dtype",
          "lr_schedule": "--lr-schedule", "relu_topdown": "--relu-topdown", "m_step": "--m-step",
          "chunk_size": "--chunk-size", "m_step_blocks": "--m-step-blocks", "m_step_latents": "--m-step-latents"}


class _FlagError(Exception):
    """A command-line value that was refused after parsing; the message names the flag."""


def _flag_hint(message: str) -> str:
    """``message`` plus the flags of the configuration fields it names (``n_labels`` -> ``--labels``)."""
    flags = [flag for field, flag in _FLAGS.items() if re.search(rf"\b{field}\b", message) and flag not in message]
    return message + (f" (set by {', '.join(flags)})" if flags else "")


def train_config(args):
    """The TrainConfig that ``drmm-ref train`` builds from its parsed arguments."""
    from drmm_ref.learning import LossWeights, TrainConfig

    a_h = args.a_h
    if a_h is None:
        a_h = 0.2 if args.labels is not None and args.model == "drmm" else 0.0
    weights = LossWeights(ce=args.a_ce, rc=args.a_rc, nn=args.a_nn, h=a_h, h_sign=args.h_sign, balance=args.a_balance)
    return TrainConfig(model=args.model, net=args.net, epochs=args.epochs, batch_size=args.batch_size,
                       optimizer=args.optimizer, lr=args.lr, momentum=args.momentum, seed=args.seed,
                       dtype=args.dtype, weights=weights, cg_blocks=tuple(args.cg_blocks), k_cg=args.k_cg,
                       cg_eta=args.cg_eta, n_train=args.n_train, n_eval=args.n_eval, data=args.data,
                       backend=args.backend, n_labels=args.labels, label_seed=args.label_seed,
                       init_from=args.init_from, checkpoint_every_steps=args.checkpoint_every_steps,
                       checkpoint_every_seconds=None if args.checkpoint_every_minutes == 0
                       else 60.0 * args.checkpoint_every_minutes, lr_schedule=args.lr_schedule,
                       relu_topdown=args.relu_topdown, m_step=args.m_step,
                       chunk_size=500 if args.chunk_size is None else args.chunk_size,
                       m_step_blocks=None if args.m_step_blocks is None else tuple(args.m_step_blocks),
                       m_step_latents="stored" if args.m_step_latents is None else args.m_step_latents)


def _train(args) -> int:
    from drmm_ref.learning import load_data, train
    from drmm_ref.learning._checks import backend_problem
    from drmm_ref.learning.trainer import check_output_folder

    problem = backend_problem(args.backend)  # before anything is loaded
    if problem is not None:
        raise _FlagError(f"--backend {args.backend}: {problem}")
    config = train_config(args)
    try:
        check_output_folder(args.out, config, resume=not args.restart)
    except ValueError as exc:
        raise _FlagError(f"--out {args.out}: {exc}") from None
    data = load_data(config, path=args.mnist_path, offline=args.offline or None, progress=not args.no_progress)
    labels = {None: "all labels", 0: "no labels (unsupervised)"}.get(args.labels, f"{args.labels} labels")
    print(f"training {args.model} on {config.network.name} for {args.epochs} epoch(s) with {labels}; "
          f"data: {data.source}; writing to {args.out}", flush=True)
    result = train(config, data, args.out, resume=not args.restart, progress=not args.no_progress,
                   threads=args.threads, flush_denormals=not args.no_flush_denormals)
    last = result.log["epochs"][-1]
    print(f"done: epoch {last['epoch']}, validation error {100 * last['validation_error']:.2f}%, "
          f"test error {100 * last['test_error']:.2f}%, training time {last['cumulative_train_seconds']:.1f} s; "
          f"log {args.out}/log.json")
    return 0


def _evaluate(args) -> int:
    import json

    import numpy as np

    from drmm_ref import to_numpy
    from drmm_ref import _backend
    from drmm_ref.io import NoTrainingState, load_checkpoint, load_params
    from drmm_ref.learning import TrainConfig, evaluate, load_data
    from drmm_ref.learning.parallel import default_threads

    _backend.keep_freed_host_memory()
    try:
        ckpt = load_checkpoint(args.checkpoint)
        params, meta = ckpt.params, {"config": ckpt.config, "epoch": ckpt.epoch}
    except NoTrainingState:  # a parameter file: its metadata may hold the run's configuration
        params, meta = load_params(args.checkpoint, return_metadata=True)
    if not isinstance(meta.get("config"), dict):
        raise _FlagError(f"{args.checkpoint}: a parameter file without the training configuration in its metadata; "
                         "evaluate needs it to load the run's data (pass a training checkpoint)")
    config = TrainConfig.from_dict(meta["config"])
    data = load_data(config, path=args.mnist_path, offline=args.offline or None, progress=False)
    report = {"checkpoint": str(args.checkpoint), "epoch": meta.get("epoch"), "model": config.model,
              "network": params.net.name, "data_source": data.source}
    splits = ("validation", "test") if args.split == "both" else (args.split,)
    for name in splits:
        split = getattr(data, name)
        x, y = to_numpy(split.images), to_numpy(split.labels).astype(np.int64)
        if config.n_eval is not None and not args.all:
            x, y = x[:config.n_eval], y[:config.n_eval]
        report[name] = evaluate(params, x, y, threads=args.threads or default_threads())
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"{report['model']} on {report['network']}, epoch {report['epoch']} ({report['data_source']})")
        for name in splits:
            r = report[name]
            print(f"  {name}: error {100 * r['error']:.2f}% on {r['n']} images, cross-entropy {r['ce']:.4f}")
    return 0


_TRAIN_HELP = """\
Train on MNIST (or a synthetic stand-in) and write <OUT>/log.json and <OUT>/checkpoints/epoch-<k>.npz.

--model drmm : the Deep Rendering Mixture Model trained by EG (SPEC §3): each mini-batch gets an
               E-step (bottom-up latents, top-down rendering of its label) and a G-step (one optimiser
               step on a_CE*CE + a_RC*RC + a_NN*NN + a_H*H); class prior, switch priors and noise
               variance get their closed forms after every epoch.
--model dcn  : the same network, initialisation, optimiser and batches trained by backprop on the
               cross-entropy alone (the baseline).

Semi-supervised (SPEC §5): --labels N keeps N class-balanced labels (seed --label-seed, default
--seed) and treats the rest of the training images as unlabelled. An epoch is then one pass over the
unlabelled images, each batch paired with as many labelled images (oversampled). drmm renders an
unlabelled image from its predicted class and adds the entropy term H (--a-h, default 0.2 with
--labels); dcn is the labels-only baseline (the labelled half of each pair, backprop on CE).
--labels 0 is unsupervised EG (set --a-ce 0 and a balance weight, e.g. --a-balance 1); the log
then reports the class latent's test accuracy after matching clusters to labels.

--m-step whole-set (drmm): after each epoch's mini-batch EG pass, the whole-set M-step of the DRMM's
EM instead of the closed forms alone: an E-step over every training image, then at those latents
the closed forms and one exact CGLS block step on RC over the whole set per block (--m-step-blocks,
default all; --k-cg iterations; --chunk-size images per chunk). Costs k_CG + 2 rendering passes over
the training set per block (docs/scaling.md); the log records RC before and after each block.

Every epoch the validation and test errors are measured and logged. Rerunning the same command on
the same --out folder resumes after the last checkpoint, bit for bit (use --restart to start over).
Examples:
  drmm-ref train --model drmm --net small2 --epochs 10 --seed 0 --out runs/drmm-small2-s0
  drmm-ref train --model drmm --net conv-small --labels 100 --epochs 5 --seed 0 --out runs/ssl-100-s0
"""


class _Parser(argparse.ArgumentParser):
    """One line for a bad command line (the flag and the reason), not the whole usage text."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="drmm-ref",
        description="Reference implementation of the Deep Rendering Mixture Model. "
        "Run `python -m validation` from the repository root to check the paper's claims.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print versions and the array backends that can be used")
    info.set_defaults(func=_info)

    tr = sub.add_parser("train", help="train a DRMM by EG or a DCN by backprop (JSON log, resumable checkpoints)",
                        description=_TRAIN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    tr.add_argument("--model", choices=("drmm", "dcn"), required=True,
                    help="drmm = EG-trained rendering model; dcn = backprop baseline on cross-entropy")
    tr.add_argument("--net", default="small2", choices=("small2", "conv-small", "conv-small-ladder"),
                    help="network preset of SPEC §6 (default small2)")
    tr.add_argument("--epochs", type=_int_at_least(0), required=True, help="number of passes over the training set")
    tr.add_argument("--seed", type=_int_at_least(0), default=0,
        help="seeds the initialisation and the batch order (default 0)")
    tr.add_argument("--out", type=_folder, required=True, help="output folder for log.json and checkpoints/")
    tr.add_argument("--batch-size", type=_int_at_least(1), default=128, help="mini-batch size (default 128)")
    tr.add_argument("--optimizer", choices=("adam", "sgd"), default="adam", help="G-step optimiser (default adam)")
    tr.add_argument("--lr", type=_number(positive=True), default=1e-3, help="learning rate (default 1e-3)")
    tr.add_argument("--relu-topdown", action="store_true",
                    help="EG: a ReLU on each partial rendering in the top-down reconstruction (SPEC §5, the NIPS "
                         "paper's non-negativity; combine with --a-nn 0 to use it instead of the penalty)")
    tr.add_argument("--lr-schedule", type=_schedule, default="constant", metavar="SCHEDULE",
                    help="learning rate per epoch: constant (default); linear-decay:S (--lr for epochs 1..S, then "
                    "a straight line to 0 at epoch --epochs + 1); step:K:F (times F every K epochs)")
    tr.add_argument("--momentum", type=_number(below_one=True), default=0.9,
        help="SGD momentum (default 0.9; ignored by adam)")
    tr.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="working precision")
    tr.add_argument("--a-ce", type=_number(), default=1.0, help="EG weight of the cross-entropy (default 1)")
    tr.add_argument("--a-rc", type=_number(), default=1.0, help="EG weight of the reconstruction error RC (default 1)")
    tr.add_argument("--a-nn", type=_number(), default=0.5,
        help="EG weight of the non-negativity penalty NN (default 0.5)")
    tr.add_argument("--a-h", type=_number(), default=None,
                    help="EG weight of the entropy term H (default 0.2 with --labels, else 0)")
    tr.add_argument("--h-sign", choices=("entropy", "kl_to_prior"), default="entropy",
                    help="which H: mean entropy of softmax(scores) or its KL to uniform (opposite signs)")
    tr.add_argument("--a-balance", type=_number(), default=0.0,
                    help="EG weight of the batch-balance term log K - H(mean prediction) (default 0; "
                    "unsupervised runs need it, or every image falls in one cluster)")
    tr.add_argument("--labels", type=_int_at_least(0), default=None, metavar="N",
                    help="semi-supervised: keep N class-balanced labels (a multiple of 10), the rest unlabelled; "
                    "0 = unsupervised (default: all labels)")
    tr.add_argument("--label-seed", type=_int_at_least(0), default=None,
        help="seed of the labelled subset (default --seed)")
    tr.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                    help="start from the parameters of this checkpoint or parameter file "
                    "(e.g. unsupervised pre-training)")
    tr.add_argument("--cg-blocks", nargs="*", default=[], metavar="BLOCK",
                    help="also take an exact CGLS step on RC for these blocks after each G-step "
                    "(filters_1 .. filters_L, class_templates); default none")
    tr.add_argument("--k-cg", type=_int_at_least(1), default=10, help="CGLS iterations per block step (default 10)")
    tr.add_argument("--cg-eta", type=_number(positive=True, up_to_one=True), default=0.5,
        help="damping of the mini-batch block steps (default 0.5)")
    tr.add_argument("--m-step", choices=("g-step", "whole-set"), default="g-step",
                    help="drmm: g-step (default; mini-batch G-steps, closed-form priors per epoch) or whole-set "
                    "(also the DRMM's EM M-step over the whole training set at each epoch's end)")
    tr.add_argument("--chunk-size", type=_int_at_least(1), default=None, metavar="N",
                    help="--m-step whole-set: images per chunk of the whole-set passes (default 500)")
    tr.add_argument("--m-step-blocks", nargs="+", default=None, metavar="BLOCK",
                    help="--m-step whole-set: blocks of the whole-set block steps, in order "
                    "(default all: filters_1 .. filters_L, class_templates)")
    tr.add_argument("--m-step-latents", choices=("stored", "recompute"), default=None,
                    help="--m-step whole-set: keep the E-step's latents packed on the host (default stored) or "
                    "recompute them every pass")
    tr.add_argument("--n-train", type=_int_at_least(1), default=None, help="use only the first N training images")
    tr.add_argument("--n-eval", type=_int_at_least(1), default=None,
        help="evaluate on the first N validation / test images")
    tr.add_argument("--data", choices=("mnist", "synthetic"), default="mnist",
                    help="mnist (cached, downloaded if needed) or a seeded synthetic stand-in (no network)")
    tr.add_argument("--mnist-path", default=None, help="local MNIST files (see drmm_ref.data.load_mnist)")
    tr.add_argument("--offline", action="store_true", help="never use the network to get MNIST")
    tr.add_argument("--backend", choices=("numpy", "array_api_strict", "cupy"), default="numpy",
                    help="array namespace (default numpy; cupy needs a CUDA GPU)")
    tr.add_argument("--checkpoint-every-steps", type=_int_at_least(1), default=None, metavar="N",
                    help="also checkpoint every N steps within an epoch (only the latest mid-epoch checkpoint is kept)")
    tr.add_argument("--checkpoint-every-minutes", type=_number(), default=10.0, metavar="M",
                    help="also checkpoint when M minutes have passed since the last checkpoint (default 10; 0 = off): "
                    "a killed run loses at most that much work")
    tr.add_argument("--restart", action="store_true",
                    help="remove this run's checkpoints in --out and start over (a folder of another run is refused)")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.add_argument("--threads", type=_int_at_least(1), default=None, metavar="N",
                    help="host threads: each batch is cut into N shards computed in parallel "
                         "(default: every core; results differ from another N in the last bits)")
    tr.add_argument("--no-flush-denormals", action="store_true",
                    help="compute with IEEE subnormal floats on the host CPU (default: flush them to zero while "
                    "training, as TensorFlow and XLA do on CPU; trained parameters make them and they slow a step "
                    "down up to 2.2x; only numbers below 1.2e-38 change)")
    tr.set_defaults(func=_train)

    ev = sub.add_parser("evaluate", help="validation and test error of a training checkpoint",
                        description="Load a checkpoint written by `drmm-ref train` (<OUT>/checkpoints/epoch-<k>.npz) "
                        "or a parameter file whose metadata holds the run's configuration, "
                        "reload the data it was trained with, and print its classification error.")
    ev.add_argument("checkpoint", help="path of a checkpoint (or parameter file) .npz")
    ev.add_argument("--split", choices=("validation", "test", "both"), default="both",
        help="which split (default both)")
    ev.add_argument("--all", action="store_true", help="evaluate the whole split even if training used --n-eval")
    ev.add_argument("--json", action="store_true", help="print the result as JSON")
    ev.add_argument("--threads", type=_int_at_least(1), default=None, metavar="N",
                    help="host threads for the evaluation (default: every core)")
    ev.add_argument("--mnist-path", default=None, help="local MNIST files (see drmm_ref.data.load_mnist)")
    ev.add_argument("--offline", action="store_true", help="never use the network to get MNIST")
    ev.set_defaults(func=_evaluate)
    return parser


def _where_to_resume(args) -> str:
    out = getattr(args, "out", None)
    if not out:
        return ""
    try:
        from drmm_ref.learning.trainer import resume_point

        point = resume_point(out)
    except Exception:  # the message must not fail: the folder may be in any state
        point = None
    if point is None:
        return f"; no checkpoint was written yet in {out}"
    return f"; the last checkpoint is {point} (rerun the same command to resume from it)"


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    prog = f"{parser.prog} {args.command}"
    if os.environ.get("DRMM_REF_DEBUG"):
        return args.func(args)
    from drmm_ref.data.mnist import MNISTUnavailable
    from drmm_ref.learning.trainer import TrainingDiverged

    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted{_where_to_resume(args)}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader closed the pipe (`drmm-ref info | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0
    except _FlagError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, TrainingDiverged, MNISTUnavailable, OSError) as exc:
        text = str(exc) if not isinstance(exc, OSError) or not exc.filename else f"{exc.filename}: {exc.strerror}"
        print(f"{prog}: error: {_flag_hint(text)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
