"""The claim runner: records, exit status, the failure/raise paths, the table."""

from __future__ import annotations

import json
import types

import pytest

from validation import _claim, _report, _runner

pytestmark = pytest.mark.validation


def _fake_module(claim_id, kind, status=None, raises=False):
    claim = _claim.Claim(id=claim_id, kind=kind, paper_ref="test", statement="a fake claim")

    def run(args):
        if raises:
            raise RuntimeError("boom")
        return _claim.Result(status=status, measured={"x": 1.0}, tolerance=0.0, summary=f"{status} on purpose")

    return types.SimpleNamespace(CLAIM=claim, main=lambda argv=None: _claim.run_claim(claim, run, argv))


@pytest.mark.parametrize(
    "modules, expected_rc",
    [
        ([("a-ok", "identity", "pass")], 0),
        ([("a-ok", "identity", "pass"), ("b-repl", "replication", "fail")], 0),  # honest replication fail
        ([("a-bad", "identity", "fail")], 1),
        ([("a-raise", "replication", None, True)], 1),  # a raising script fails the run
    ],
)
def test_exit_status_rules(monkeypatch, tmp_path, modules, expected_rc):
    fakes = [_fake_module(*m) for m in modules]
    monkeypatch.setattr(_runner, "discover", lambda: fakes)
    rc = _runner.main(["--quick", "--out", str(tmp_path)])
    assert rc == expected_rc
    summary = json.loads((tmp_path / "validation.json").read_text())
    assert {r["id"] for r in summary["records"]} == {m[0] for m in modules}
    for rec in summary["records"]:
        assert set(_runner.REQUIRED_FIELDS) <= set(rec)
        assert rec["passed"] == (rec["status"] == "pass")
    assert "| claim |" in (tmp_path / "validation.md").read_text()


def test_only_rejects_unknown_ids(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(_runner, "discover", lambda: [_fake_module("a-ok", "identity", "pass")])
    assert _runner.main(["--only", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown claim id" in capsys.readouterr().err


def test_discovery_finds_the_adjoint_claim():
    ids = {m.CLAIM.id for m in _runner.discover()}
    assert "adjoint-identities" in ids


def test_adjoint_identities_claim_passes(tmp_path):
    from validation import adjoint_identities

    rec = adjoint_identities.main(["--quick", "--out", str(tmp_path), "--seed", "3"])
    assert rec["status"] == "pass", rec["summary"]
    assert rec["command"].startswith("python -m validation --only adjoint-identities --quick --seed 3")
    assert json.loads((tmp_path / "adjoint-identities.json").read_text())["id"] == "adjoint-identities"


def test_claim_rejects_bad_kind_and_status():
    with pytest.raises(ValueError, match="kind"):
        _claim.Claim(id="x", kind="guess", paper_ref="", statement="")
    with pytest.raises(ValueError, match="status"):
        _claim.Result(status="maybe", measured={}, tolerance=None, summary="")


def test_records_refuse_nan(tmp_path):
    with pytest.raises(ValueError):
        _claim.write_json_atomic(tmp_path / "x.json", {"v": float("nan")})
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


def test_readme_block_update(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{_report.BEGIN}\nold\n{_report.END}\noutro\n")
    _report.update_readme(readme)
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro") and text.rstrip().endswith("outro")
    assert "| claim |" in text
    with pytest.raises(ValueError, match="no .* block"):
        (tmp_path / "bare.md").write_text("x")
        _report.update_readme(tmp_path / "bare.md")
