"""The ``drmm-ref`` command line.

``drmm-ref info`` prints the installed versions and which array backends are usable. Training and
evaluation commands are added by the learning layer (SPEC §3); nothing in the library imports this module.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drmm-ref",
        description="Reference implementation of the Deep Rendering Mixture Model. "
        "Run `python -m validation` from the repository root to check the paper's claims.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print versions and the array backends that can be used")
    info.set_defaults(func=_info)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
