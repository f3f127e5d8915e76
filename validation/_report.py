"""Markdown tables of claim records, and the README's claims table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import _claim

BEGIN, END = "<!-- claims-table:begin -->", "<!-- claims-table:end -->"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def load_records(folder: Path) -> list[dict[str, Any]]:
    """Every claim record in ``folder`` (``<id>.json``), skipping the aggregate files."""
    records = []
    if folder.is_dir():
        for path in sorted(folder.glob("*.json")):
            if path.name == "validation.json":
                continue
            with open(path, encoding="utf-8") as fh:
                rec = json.load(fh)
            if isinstance(rec, dict) and "id" in rec and "kind" in rec:
                records.append(rec)
    return records


def markdown_table(records: list[dict[str, Any]], title: str | None = None) -> str:
    """One row per record: id, kind, status, seconds, summary of the measured values."""
    lines = [f"### {title}", ""] if title else []
    lines += ["| claim | kind | status | seconds | measured | paper / SPEC |", "|---|---|---|---:|---|---|"]
    for rec in sorted(records, key=lambda r: (r["kind"] != "identity", r["id"])):
        status = rec["status"].upper()
        lines.append(
            f"| `{rec['id']}` | {rec['kind']} | **{status}** | {rec.get('seconds', 0):.1f} | "
            f"{_cell(rec.get('summary', ''))} | {_cell(rec.get('paper_ref', ''))} |"
        )
    return "\n".join(lines) + "\n"


def readme_table() -> str:
    """The README's claims table: each claim's quick record and, where one is committed, its full record."""
    quick = {r["id"]: r for r in load_records(_claim.DEFAULT_OUT["quick"])}
    full = {r["id"]: r for r in load_records(_claim.DEFAULT_OUT["full"])}
    ids = sorted(set(quick) | set(full), key=lambda i: ((quick.get(i) or full.get(i))["kind"] != "identity", i))
    lines = ["| claim | kind | `--quick` | `--full` (committed record) "
             "| measured (the full record where there is one) |", "|---|---|---|---|---|"]
    for cid in ids:
        rec = full.get(cid) or quick[cid]
        q = quick[cid]["status"].upper() if cid in quick else "not run"
        f = f"**{full[cid]['status'].upper()}**" if cid in full else "no record yet"
        origin = "" if cid in full else "[quick] "
        lines.append(f"| `{cid}` | {rec['kind']} | {q} | {f} | {origin}{_cell(rec.get('summary', ''))} |")
    return "\n".join(lines) + "\n"


def update_readme(path: Path | None = None) -> None:
    """Replace the block between the claims-table markers of README.md with :func:`readme_table`."""
    path = Path(path) if path is not None else _claim.REPO_ROOT / "README.md"
    text = path.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise ValueError(f"{path} has no {BEGIN} ... {END} block to update")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    _claim.write_text_atomic(path, head + BEGIN + "\n" + readme_table() + END + tail)
