"""The conformance corpus: layer stacks kept as data, with the tree each must give.

Each file in ``testdata/corpus/`` holds a JSON list of cases::

    {"name": "whiteout-lower-file", "rule": "whiteouts",
     "description": "a whiteout deletes a file of a lower layer",
     "layers": [[{"path": "a", "type": "file", "content": "x"}],
                [{"path": "a", "type": "whiteout"}]],
     "expected": {"b": {"type": "file", "content": "y"}}}

An entry has a ``path`` (the tar member name, verbatim) and a ``type``:
``file``, ``dir``, ``symlink``, ``hardlink`` (``target`` for both links),
``fifo``, ``char``/``block`` (``major``, ``minor``), or the shorthands
``whiteout`` (``path`` is what it deletes: ``d/.wh.NAME``) and ``opaque``
(``path`` is the directory: ``d/.wh..wh..opq``); optional ``content``,
``mode`` (octal string), ``uid``, ``gid``, ``mtime``, ``xattrs``.

``expected`` maps every path of the final tree (``.`` for the root, only if
its metadata matters) to ``type`` and optionally ``mode``, ``content``,
``target``, ``uid``, ``gid``, ``xattrs`` and ``link`` (another path of the
same hardlink group). Directories that are only ancestors of listed paths
may be left out: they must exist as directories, with any metadata. Instead
of ``expected`` a case may give ``"error": "unsafe"`` or ``"bad-input"``:
the stack must be refused.

``@OUTSIDE@`` in names, link targets and expected paths stands for a host
directory outside the root holding canary files; it is replaced per run
(see ``conformance``), so an escape hits something that is watched.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BadInputError, NotFoundError
from .imagewrite import tar_bytes, write_docker_save, write_oci_layout
from .paxwriter import TarWriter
from .treewalk import walk_tree

OUTSIDE = "@OUTSIDE@"
TAG = "case"  # the OCI layout's ref name; umoci: --image DIR:case
MTIME = 1_600_000_000
ERRORS = ("unsafe", "bad-input")
ENTRY_TYPES = {
    "file": b"0",
    "hardlink": b"1",
    "symlink": b"2",
    "char": b"3",
    "block": b"4",
    "dir": b"5",
    "fifo": b"6",
}
DEFAULT_MODES = {"dir": 0o755, "symlink": 0o777, "char": 0o666, "block": 0o660}
CANARY_FILES = {"passwd": "host passwd\n", "victim": "host file\n", "dir/file": "host nested\n"}


def default_corpus_dir() -> Path:
    """``testdata/corpus`` of the source tree this package lives in."""
    return Path(__file__).resolve().parent.parent / "testdata" / "corpus"


@dataclass(frozen=True, slots=True)
class Case:
    """One declarative case: layers (lists of entry dicts) and the tree or error expected."""

    name: str
    rule: str
    description: str
    layers: tuple[tuple[Mapping[str, Any], ...], ...]
    expected: Mapping[str, Mapping[str, Any]] | None = None
    error: str | None = None
    escape: bool = False  # an escape attempt: the canary must stay untouched
    needs_root: bool = False
    source: str = ""

    def expected_tree(self, outside: str) -> dict[str, dict[str, Any]]:
        """``expected`` with ``@OUTSIDE@`` replaced (paths relative: the root clamps them)."""
        rel = outside.lstrip("/")
        out: dict[str, dict[str, Any]] = {}
        for path, spec in (self.expected or {}).items():
            spec = dict(spec)
            if "target" in spec:
                spec["target"] = spec["target"].replace(OUTSIDE, outside)
            if "link" in spec:
                spec["link"] = spec["link"].replace(OUTSIDE, rel)
            out[path.replace(OUTSIDE, rel)] = spec
        return out

    def as_dict(self, outside: str) -> dict[str, Any]:
        """The JSON form written as ``expected.json``, placeholders replaced."""
        doc: dict[str, Any] = {
            "schema": "extractor.corpus-case/v1",
            "name": self.name,
            "rule": self.rule,
            "description": self.description,
            "escape": self.escape,
            "outside": outside,
        }
        if self.error is not None:
            doc["error"] = self.error
        else:
            doc["expected"] = self.expected_tree(outside)
            doc["note"] = (
                "nothing else may exist, except unlisted ancestors of listed paths, which "
                "must be directories (any metadata); fields not given are not compared"
            )
        return doc


def _case(doc: Any, source: str) -> Case:
    if not isinstance(doc, dict):
        raise BadInputError(f"{source}: a case must be an object")
    name = doc.get("name")
    if not isinstance(name, str) or not name or not all(c.isalnum() or c == "-" for c in name):
        raise BadInputError(f"{source}: bad case name {name!r} (letters, digits, '-')")
    if name != name.lower():
        raise BadInputError(f"{source}: case name {name!r} must be lowercase")
    layers = doc.get("layers")
    if not isinstance(layers, list) or not all(isinstance(x, list) for x in layers):
        raise BadInputError(f"{source}: case {name}: layers must be a list of lists")
    expected, error = doc.get("expected"), doc.get("error")
    if (expected is None) == (error is None):
        raise BadInputError(f"{source}: case {name}: give exactly one of expected and error")
    if error is not None and error not in ERRORS:
        raise BadInputError(f"{source}: case {name}: error must be one of {ERRORS}")
    for layer in layers:
        for entry in layer:
            kind = entry.get("type")
            if kind not in ENTRY_TYPES and kind not in ("whiteout", "opaque"):
                raise BadInputError(f"{source}: case {name}: unknown entry type {kind!r}")
    return Case(
        name=name,
        rule=str(doc.get("rule", "")),
        description=str(doc.get("description", "")),
        layers=tuple(tuple(layer) for layer in layers),
        expected=expected,
        error=error,
        escape=bool(doc.get("escape", False)),
        needs_root=bool(doc.get("needs_root", False)),
        source=source,
    )


def load_cases(directory: str | os.PathLike[str] | None = None) -> list[Case]:
    """Every case of every ``*.json`` file in ``directory``, in file then list order."""
    top = Path(directory) if directory is not None else default_corpus_dir()
    if not top.is_dir():
        raise NotFoundError(f"no corpus directory {top}")
    cases: list[Case] = []
    for path in sorted(top.glob("*.json")):
        try:
            docs = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise BadInputError(f"{path}: {e}") from None
        if not isinstance(docs, list):
            raise BadInputError(f"{path}: expected a JSON list of cases")
        cases.extend(_case(doc, path.name) for doc in docs)
    names = [c.name for c in cases]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BadInputError(f"duplicate case names: {', '.join(duplicates)}")
    return cases


def _mode(entry: Mapping[str, Any], kind: str) -> int:
    mode = entry.get("mode")
    if mode is None:
        return DEFAULT_MODES.get(kind, 0o644)
    return int(mode, 8) if isinstance(mode, str) else int(mode)


def _member_name(entry: Mapping[str, Any], outside: str) -> tuple[str, str]:
    kind = str(entry["type"])
    path = str(entry["path"]).replace(OUTSIDE, outside)
    if kind == "whiteout":
        head, _, base = path.rpartition("/")
        return "file", f"{head}/.wh.{base}" if head else f".wh.{base}"
    if kind == "opaque":
        return "file", f"{path.rstrip('/')}/.wh..wh..opq" if path.strip("/") else ".wh..wh..opq"
    return kind, path


def _write_entry(writer: TarWriter, entry: Mapping[str, Any], outside: str) -> None:
    kind, name = _member_name(entry, outside)
    data = str(entry.get("content", "")).encode() if kind == "file" else b""
    xattrs = entry.get("xattrs") or {}
    writer.member(
        os.fsencode(name),
        ENTRY_TYPES[kind],
        mode=_mode(entry, kind),
        uid=int(entry.get("uid", 0)),
        gid=int(entry.get("gid", 0)),
        mtime=int(entry.get("mtime", MTIME)),
        size=len(data),
        linkname=os.fsencode(str(entry.get("target", "")).replace(OUTSIDE, outside)),
        device=(int(entry.get("major", 0)), int(entry.get("minor", 0))),
        xattrs=sorted((k.encode(), str(v).encode()) for k, v in xattrs.items()),
    )
    if data:
        writer.write(data)
        writer.pad(len(data))


def layer_tars(case: Case, outside: str) -> list[bytes]:
    """The case's layers as uncompressed tar bytes, ``@OUTSIDE@`` replaced by ``outside``."""

    def build(layer: Sequence[Mapping[str, Any]]) -> bytes:
        def members(writer: TarWriter) -> None:
            for entry in layer:
                _write_entry(writer, entry, outside)

        return tar_bytes(members)

    return [build(layer) for layer in case.layers]


def write_canary(outside: str) -> None:
    """Create the canary files a run watches (``passwd``, ``victim``, ``dir/file``)."""
    for rel, text in CANARY_FILES.items():
        path = os.path.join(outside, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)


@dataclass(slots=True)
class Materialized:
    """Where one case was written: its layer files and, if asked for, its two image forms."""

    layers: list[str]
    oci: str | None = None
    docker: str | None = None
    expected: str | None = None
    outside: str = ""


def materialize(
    case: Case,
    out: str,
    outside: str,
    *,
    oci: bool = True,
    docker: bool = True,
    expected: bool = True,
) -> Materialized:
    """Write ``case`` under ``out``: ``layers/N.tar`` (N from 1), ``oci``, ``docker-save.tar``."""
    tars = layer_tars(case, outside)
    os.makedirs(os.path.join(out, "layers"), exist_ok=True)
    done = Materialized(layers=[], outside=outside)
    for i, tar in enumerate(tars, start=1):
        path = os.path.join(out, "layers", f"{i}.tar")
        with open(path, "wb") as f:
            f.write(tar)
        done.layers.append(path)
    if oci:
        done.oci = write_oci_layout(os.path.join(out, "oci"), tars, TAG)
    if docker:
        done.docker = write_docker_save(
            os.path.join(out, "docker-save.tar"), tars, f"corpus/{case.name}:latest"
        )
    if expected:
        done.expected = os.path.join(out, "expected.json")
        with open(done.expected, "w", encoding="utf-8") as f:
            json.dump(case.as_dict(outside), f, indent=2, sort_keys=True)
            f.write("\n")
    return done


def write_corpus(out: str, cases: Sequence[Case]) -> list[str]:
    """``extractor corpus OUT``: every case under ``OUT/NAME`` with its canary; returns the dirs.

    ``@OUTSIDE@`` becomes ``OUT/NAME/outside`` (absolute), where canary files are written.
    """
    out = os.path.abspath(out)
    dirs = []
    for case in cases:
        case_dir = os.path.join(out, case.name)
        outside = os.path.join(case_dir, "outside")
        write_canary(outside)
        materialize(case, case_dir, outside)
        dirs.append(case_dir)
    return dirs


def _ancestors(path: str) -> Iterator[str]:
    head = path
    while "/" in head:
        head = head.rpartition("/")[0]
        yield head


def _read(record: Any) -> bytes:
    fd = record.open()
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _groups(expected: Mapping[str, Mapping[str, Any]]) -> dict[str, frozenset[str]]:
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for path, spec in expected.items():
        find(path)
        if "link" in spec:
            parent[find(path)] = find(str(spec["link"]))
    members: dict[str, set[str]] = {}
    for path in expected:
        members.setdefault(find(path), set()).add(path)
    return {p: frozenset(members[find(p)]) for p in expected}


def check_tree(dest: str, expected: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What differs between the tree at ``dest`` and ``expected``; empty when it matches.

    Types, symlink targets and hardlink groups always; contents, modes,
    owners and xattrs where ``expected`` gives them. Nothing is followed or written.
    """
    problems: list[str] = []
    implied = {a for p in expected for a in _ancestors(p)}
    inodes: dict[tuple[int, int], set[str]] = {}
    seen: set[str] = set()
    with walk_tree(dest) as walk:
        for record in walk:
            path = record.path
            if record.kind != "dir" and record.nlink > 1:
                inodes.setdefault((record.dev, record.ino), set()).add(path)
            spec = expected.get(path)
            if spec is None:
                if path == ".":
                    continue
                if path in implied:
                    if record.kind != "dir":
                        problems.append(f"{path}: type: expected dir, got {record.kind}")
                        walk.prune()
                    continue
                problems.append(f"{path}: unexpected {record.kind}")
                walk.prune()
                continue
            seen.add(path)
            problems.extend(_check_record(record, spec))
            if record.kind == "dir" and spec.get("type") != "dir":
                walk.prune()
    problems.extend(
        f"{p}: missing (expected {spec.get('type')})"
        for p, spec in expected.items()
        if p not in seen and p != "."
    )
    groups = _groups(expected)
    actual: dict[str, frozenset[str]] = {}
    for names in inodes.values():
        for name in names:
            actual[name] = frozenset(names)
    for path, spec in expected.items():
        if spec.get("type") in (None, "dir") or path not in seen:
            continue
        want, got = groups[path], actual.get(path, frozenset({path}))
        if want != got:
            problems.append(f"{path}: hardlink group: expected {sorted(want)}, got {sorted(got)}")
    return problems


def _check_record(record: Any, spec: Mapping[str, Any]) -> list[str]:
    path, kind = record.path, record.kind
    want = spec.get("type")
    if want is not None and want != kind:
        return [f"{path}: type: expected {want}, got {kind}"]
    out = []
    if "mode" in spec and kind != "symlink":
        mode = int(spec["mode"], 8) if isinstance(spec["mode"], str) else int(spec["mode"])
        if record.mode != mode:
            out.append(f"{path}: mode: expected {mode:04o}, got {record.mode:04o}")
    if "target" in spec and record.target != spec["target"]:
        out.append(f"{path}: target: expected {spec['target']!r}, got {record.target!r}")
    for key in ("uid", "gid"):
        if key in spec and getattr(record, key) != int(spec[key]):
            out.append(f"{path}: {key}: expected {spec[key]}, got {getattr(record, key)}")
    if "content" in spec and kind == "file":
        data = _read(record)
        if data != str(spec["content"]).encode():
            out.append(f"{path}: content: expected {spec['content']!r}, got {data[:60]!r}")
    if "xattrs" in spec:
        have = dict(record.xattrs)
        for key, value in spec["xattrs"].items():
            if have.get(key) != str(value).encode():
                out.append(f"{path}: xattr {key}: expected {value!r}, got {have.get(key)!r}")
    device = spec.get("device")
    if device is not None and list(record.device or ()) != list(device):
        out.append(f"{path}: device: expected {device}, got {record.device}")
    return out
