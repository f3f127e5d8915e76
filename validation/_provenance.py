"""The commit a claim record was produced from, and whether the working tree differed from it.

Every record written by :mod:`validation` carries ``git_commit`` (the 40-hex ``HEAD`` of the
checkout holding this package) and ``git_dirty`` (True when tracked files differ from ``HEAD`` or
untracked, not-ignored files exist, outside ``results/``, which holds the outputs of these runs and
not their inputs). Outside a git checkout, or without a ``git`` executable, both are ``None``.

The state is read once per process, before the first record is written, so that a run which
rewrites committed records (``--full``) does not see its own output as a dirty tree.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


@functools.lru_cache(maxsize=None)
def git_state(root: Path = _ROOT) -> dict[str, Any]:
    """``{"git_commit": str | None, "git_dirty": bool | None}`` for the checkout at ``root``."""
    inside = _git(root, "rev-parse", "--is-inside-work-tree")
    commit = _git(root, "rev-parse", "HEAD") if inside and inside.strip() == "true" else None
    if commit is None:
        return {"git_commit": None, "git_dirty": None}
    status = _git(root, "status", "--porcelain", "--", ".", ":(exclude)results")
    return {"git_commit": commit.strip(), "git_dirty": None if status is None else bool(status.strip())}
