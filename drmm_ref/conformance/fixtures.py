"""Golden fixture files: versioned, checksummed ``.npz`` archives of cases, byte-reproducible on one machine.

A fixture file (format ``drmm_ref.conformance``, version :data:`FORMAT_VERSION`) is a zip archive
readable by ``numpy.load(path, allow_pickle=False)``. It holds one ``.npy`` member per array and a
``__meta__`` member: a 0-d unicode array holding JSON with the format, version, the group name, the
SHA-256 of every array (name, dtype, shape, bytes; :func:`drmm_ref._files.array_checksum`) and the
list of cases. A case is::

    {"name": "tiny/bottom_up", "op": "bottom_up", "description": "...", "tags": [...],
     "args": {argument: JSON value},                    # scalars, net descriptions, weights ...
     "arrays": {argument: key or {field: key}},        # array arguments (dict arguments field by field)
     "expected": {output: key},                        # flattened output names (terms.ce, gradients.filters_1)
     "zero_default": ["gradients."],                   # output prefixes where a missing entry means zeros
     "tolerance": {"rtol": 1e-10, "atol": 0.0}}

Arrays shared by several cases (parameters, images) are stored once and named by every case that
uses them. A dict argument may have both JSON fields (``args``) and array fields (``arrays``): they
are merged. Digit-string keys of ``grad_renderings`` become ints.

Reproducibility: members are written in sorted order with a fixed timestamp (1980-01-01), fixed
permissions and deflate level 6, so the same cases give the same bytes on every run (the tests
regenerate a subset and compare bytes). Writes are atomic (:mod:`drmm_ref._files`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .._files import array_checksum, atomic_write, atomic_write_json

__all__ = ["FORMAT", "FORMAT_VERSION", "Case", "FixtureError", "write_fixture", "read_fixture", "fixture_dir",
           "load_cases", "file_sha256", "MANIFEST"]

FORMAT = "drmm_ref.conformance"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_EPOCH = (1980, 1, 1, 0, 0, 0)


class FixtureError(ValueError):
    """A fixture file is missing, corrupted (checksum), of another format or of a newer version."""


@dataclasses.dataclass
class Case:
    """One conformance case: an operation, its inputs and its expected outputs (NumPy arrays)."""

    name: str
    op: str
    inputs: dict[str, Any]
    expected: dict[str, np.ndarray]
    tolerance: dict[str, float]
    description: str = ""
    tags: tuple[str, ...] = ()
    zero_default: tuple[str, ...] = ()
    group: str = ""


def fixture_dir() -> Path:
    """The folder of the fixtures shipped with the package."""
    return Path(__file__).resolve().parent / "fixtures"


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    a = np.asarray(a)
    np.lib.format.write_array(buf, a if a.flags.c_contiguous else a.copy(order="C"), allow_pickle=False)
    return buf.getvalue()


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in sorted(members):
            info = zipfile.ZipInfo(name + ".npy", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            zf.writestr(info, members[name], compress_type=zipfile.ZIP_DEFLATED, compresslevel=6)
    return buf.getvalue()


class _Store:
    """Arrays by content: an identical array reused by several cases is stored once."""

    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}
        self._by_hash: dict[str, str] = {}

    def put(self, key: str, a: Any) -> str:
        a = np.asarray(a)
        a = a if a.flags.c_contiguous else a.copy(order="C")
        if a.dtype == object:
            raise TypeError(f"fixture array {key!r} has dtype object; only numeric and bool arrays are stored")
        digest = array_checksum({"a": a})
        if digest in self._by_hash:
            return self._by_hash[digest]
        if key in self.arrays:
            raise ValueError(f"two different arrays under one fixture key {key!r}")
        self.arrays[key] = a
        self._by_hash[digest] = key
        return key


def _encode_case(case: Case, store: _Store, shared: dict[int, str]) -> dict[str, Any]:
    args, arrays = {}, {}
    for arg, value in case.inputs.items():
        if isinstance(value, np.ndarray):
            arrays[arg] = store.put(shared.get(id(value), f"{case.name}/in/{arg}"), value)
        elif isinstance(value, dict):
            fields_json, fields_arr = {}, {}
            for k, v in value.items():
                k = str(k)
                if isinstance(v, np.ndarray):
                    fields_arr[k] = store.put(shared.get(id(v), f"{case.name}/in/{arg}/{k}"), v)
                else:
                    fields_json[k] = v
            if fields_arr:
                arrays[arg] = fields_arr
            if fields_json or not fields_arr:
                args[arg] = fields_json
        else:
            args[arg] = value
    expected = {out: store.put(f"{case.name}/out/{out}", v) for out, v in case.expected.items()}
    return {"name": case.name, "op": case.op, "description": case.description, "tags": list(case.tags),
            "args": args, "arrays": arrays, "expected": expected, "zero_default": list(case.zero_default),
            "tolerance": dict(case.tolerance)}


def write_fixture(path: str | Path, group: str, cases: list[Case], shared: dict[int, str] | None = None,
                  generator: dict[str, Any] | None = None) -> Path:
    """Write ``cases`` to ``path`` (byte-reproducible; see the module docstring).

    ``shared`` maps ``id(array)`` of arrays used by several cases to a readable key (``params/tiny``).
    """
    store = _Store()
    shared = shared or {}
    encoded = [_encode_case(c, store, shared) for c in cases]
    names = [c["name"] for c in encoded]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate case names in group {group!r}")
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "group": group, "generator": generator or {},
            "checksum": array_checksum(store.arrays), "cases": encoded}
    text = json.dumps(meta, sort_keys=True, allow_nan=False, separators=(",", ":"))
    members = {name: _npy_bytes(a) for name, a in store.arrays.items()}
    members["__meta__"] = _npy_bytes(np.asarray(text))
    data = _zip_bytes(members)
    return atomic_write(path, lambda fh: fh.write(data))


def _decode_value(arg: str, json_part: Any, arr_part: Any, arrays: dict[str, np.ndarray]) -> Any:
    if arr_part is None:
        return json_part
    if isinstance(arr_part, str):
        return arrays[arr_part]
    value = dict(json_part or {})
    value.update({k: arrays[key] for k, key in arr_part.items()})
    if arg == "grad_renderings":
        value = {int(k): v for k, v in value.items()}
    return value


def read_fixture(path: str | Path) -> tuple[dict[str, Any], list[Case]]:
    """Read and verify one fixture file: ``(meta, cases)``. Raises :class:`FixtureError`."""
    path = Path(path)
    if not path.is_file():
        raise FixtureError(f"{path}: no such fixture file")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "__meta__" not in data.files:
                raise FixtureError(f"{path}: not a conformance fixture (no __meta__ entry)")
            meta = json.loads(str(data["__meta__"]))
            arrays = {name: np.array(data[name]) for name in data.files if name != "__meta__"}
    except FixtureError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise FixtureError(f"{path}: unreadable fixture file ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else meta
        raise FixtureError(f"{path}: format {found!r} is not {FORMAT!r}")
    version = meta.get("version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise FixtureError(f"{path}: fixture version {version!r} is not supported (this drmm_ref reads "
                           f"1..{FORMAT_VERSION}); upgrade drmm_ref")
    if array_checksum(arrays) != meta.get("checksum"):
        raise FixtureError(f"{path}: checksum mismatch: the fixture file is corrupted or was edited")
    cases = []
    for c in meta["cases"]:
        inputs = {}
        for arg in set(c["args"]) | set(c["arrays"]):
            inputs[arg] = _decode_value(arg, c["args"].get(arg), c["arrays"].get(arg), arrays)
        cases.append(Case(name=c["name"], op=c["op"], inputs=inputs,
                          expected={k: arrays[v] for k, v in c["expected"].items()},
                          tolerance=c["tolerance"], description=c.get("description", ""), tags=tuple(c.get("tags", ())),
                          zero_default=tuple(c.get("zero_default", ())), group=meta.get("group", "")))
    return meta, cases


def write_manifest(folder: str | Path, files: list[Path], generator: dict[str, Any]) -> Path:
    """``manifest.json``: every fixture file (in the order given, the runner's) with its SHA-256 and case count."""
    entries = []
    for f in files:
        meta, cases = read_fixture(f)
        entries.append({"file": f.name, "group": meta["group"], "sha256": file_sha256(f), "cases": len(cases),
                        "bytes": f.stat().st_size})
    payload = {"format": FORMAT, "version": FORMAT_VERSION, "generator": generator, "files": entries}
    return atomic_write_json(Path(folder) / MANIFEST, payload)


def load_cases(folder: str | Path | None = None, *, verify_manifest: bool = True) -> list[Case]:
    """Every case of every fixture file in ``folder`` (default: the shipped fixtures), checked.

    With ``verify_manifest`` each file's SHA-256 must match ``manifest.json`` (a stale or edited
    file raises :class:`FixtureError`).
    """
    folder = Path(folder) if folder is not None else fixture_dir()
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise FixtureError(f"{folder}: no {MANIFEST}; regenerate with `python -m drmm_ref.conformance.generate`")
    manifest = json.loads(manifest_path.read_text())
    cases = []
    for entry in manifest["files"]:
        path = folder / entry["file"]
        if verify_manifest and path.is_file() and file_sha256(path) != entry["sha256"]:
            raise FixtureError(f"{path}: SHA-256 differs from {MANIFEST}; the file is stale or was edited")
        cases.extend(read_fixture(path)[1])
    return cases
