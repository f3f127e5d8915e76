"""Claim records name the commit that produced them and whether the tree differed from it."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from validation import _claim, _provenance, _runner

pytestmark = pytest.mark.validation
GIT = shutil.which("git")


def _git(root, *args):
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


@pytest.mark.skipif(GIT is None, reason="no git executable")
def test_clean_and_dirty_trees_outputs_under_results_do_not_count(tmp_path):
    state = _provenance.git_state.__wrapped__  # uncached
    _git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "r.json").write_text("{}")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "first")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert state(tmp_path) == {"git_commit": head, "git_dirty": False}
    (tmp_path / "results" / "r.json").write_text('{"rewritten": true}')  # a run's own output
    assert state(tmp_path) == {"git_commit": head, "git_dirty": False}
    (tmp_path / "new.py").write_text("")  # an untracked source file changes what ran
    assert state(tmp_path)["git_dirty"] is True
    (tmp_path / "new.py").unlink()
    (tmp_path / "code.py").write_text("x = 2\n")
    assert state(tmp_path) == {"git_commit": head, "git_dirty": True}


def test_outside_a_checkout_and_without_git_both_fields_are_null(tmp_path, monkeypatch):
    state = _provenance.git_state.__wrapped__
    assert state(tmp_path) == {"git_commit": None, "git_dirty": None}
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable to be found
    assert state(_claim.REPO_ROOT) == {"git_commit": None, "git_dirty": None}


def test_every_record_carries_the_fields(tmp_path, monkeypatch):
    claim = _claim.Claim(id="a-ok", kind="identity", paper_ref="test", statement="a fake claim")

    def run(args):
        return _claim.Result(status="pass", measured={}, tolerance=0.0, summary="ok")

    rec = _claim.run_claim(claim, run, ["--out", str(tmp_path)])
    assert rec["git_commit"] == _provenance.git_state()["git_commit"]
    assert rec["git_dirty"] in (True, False, None)
    if GIT is not None and rec["git_commit"] is not None:
        assert len(rec["git_commit"]) == 40 and int(rec["git_commit"], 16) >= 0

    class Raising:
        CLAIM = claim

        @staticmethod
        def main(argv=None):
            raise RuntimeError("boom")

    monkeypatch.setattr(_runner, "discover", lambda: [Raising])
    assert _runner.main(["--quick", "--out", str(tmp_path)]) == 1
    raised = _runner.load_records(tmp_path)[0]
    assert raised["status"] == "fail" and "git_commit" in raised and "git_dirty" in raised
