"""The conformance corpus (testdata/corpus): every case, applied by extractor, gives its tree.

Each case is applied three ways: from its layer tarballs (``apply_layers``), and
unpacked from the OCI layout and the docker save that ``extractor corpus`` writes.
Every run happens in the layout the conformance runner uses (canary files in
``outside/``, three directories above the root), and nothing but the root may change.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest
from conftest import IS_ROOT

from extractor import apply_layers
from extractor.cli import main
from extractor.conformance import DEST_DEPTH, snapshot
from extractor.corpus import (
    Case,
    check_tree,
    default_corpus_dir,
    load_cases,
    materialize,
    write_canary,
)
from extractor.errors import BadInputError, ExtractorError, UnsafeEntryError
from extractor.unpack import unpack_image

CASES = load_cases()
ERROR_CLASSES: dict[str, type[ExtractorError]] = {
    "unsafe": UnsafeEntryError,
    "bad-input": BadInputError,
}
# Every rule of the engine and every escape class the brief names, by case.
REQUIRED = {
    "whiteout-before-same-layer-entry",
    "whiteout-after-same-layer-entry",
    "opaque-before-siblings",
    "opaque-after-siblings",
    "aufs-plnk-hardlink",
    "replace-dir-with-symlink",
    "replace-symlink-with-dir",
    "non-directory-parent",
    "hardlink-to-lower-layer",
    "hardlink-to-symlink",
    "hardlink-chain",
    "hardlink-before-target",
    "duplicate-entries-last-wins",
    "root-type-change-refused",
    "modes-special-bits",
    "escape-dotdot-name",
    "escape-absolute-name",
    "escape-symlink-parent-earlier-layer",
    "escape-symlink-parent-same-layer",
    "escape-absolute-symlink-chain",
    "escape-cve-2025-47290",
    "escape-hardlink-through-symlink",
    "escape-whiteout-under-symlink",
    "malformed-whiteout-dotdot",
    "escape-symlink-loop",
}


class Site:
    """The conformance layout in ``base``: ``outside/`` canary, root at ``x/y/rootfs``."""

    def __init__(self, base: Path, case: Case, images: bool):
        self.base = base
        self.outside = str(base / "outside")
        write_canary(self.outside)
        self.made = materialize(
            case, str(base / "in"), self.outside, oci=images, docker=images, expected=False
        )
        self.dest = str(base.joinpath(*DEST_DEPTH))
        os.makedirs(os.path.dirname(self.dest))
        self.before = snapshot(str(base), self.dest)

    def check_canary(self) -> None:
        """Fail if anything beside the root changed."""
        after = snapshot(str(self.base), self.dest)
        assert after == self.before, "HOST PATH WAS CHANGED: THIS IS A PATH ESCAPE"


def _ids(cases: list[Case]) -> list[str]:
    return [c.name for c in cases]


def _runnable(case: Case) -> None:
    if case.needs_root and not IS_ROOT:
        pytest.skip("needs uid 0 (ownership, devices)")


def _outcome(case: Case, site: Site, run: Any) -> None:
    if case.error is not None:
        with pytest.raises(ERROR_CLASSES[case.error]):
            run()
    else:
        run()
        assert check_tree(site.dest, case.expected_tree(site.outside)) == []
    site.check_canary()


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_case_from_layers(case: Case, tmp_path: Path) -> None:
    """Applying the case's layer tarballs gives exactly its expected tree or error."""
    _runnable(case)
    site = Site(tmp_path, case, images=False)
    _outcome(case, site, lambda: apply_layers(site.dest, site.made.layers))


@pytest.mark.parametrize("form", ["oci", "docker"])
@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_case_from_image(case: Case, form: str, tmp_path: Path) -> None:
    """Unpacking the case's OCI layout or docker save gives the same tree or error."""
    _runnable(case)
    site = Site(tmp_path, case, images=True)
    image = site.made.oci if form == "oci" else site.made.docker
    ref = "case" if form == "oci" else f"corpus/{case.name}:latest"
    assert image is not None
    _outcome(case, site, lambda: unpack_image(image, site.dest, ref=ref))


def test_corpus_covers_every_rule_and_escape() -> None:
    """The corpus holds 30-70 uniquely named, described cases, including every required one."""
    names = [c.name for c in CASES]
    assert 30 <= len(CASES) <= 70
    assert len(set(names)) == len(names)
    assert not REQUIRED - set(names), sorted(REQUIRED - set(names))
    assert all(c.description and c.rule for c in CASES)
    assert {c.error for c in CASES} == {None, "unsafe", "bad-input"}
    assert sum(c.escape for c in CASES) >= 15


# -- check_tree: the comparison must be able to fail ------------------------------------------

BASE_TREE: dict[str, dict[str, Any]] = {
    "d": {"type": "dir", "mode": "0755"},
    "d/f": {"type": "file", "content": "x", "mode": "0644"},
    "d/g": {"type": "file", "content": "x", "link": "d/f"},
    "s": {"type": "symlink", "target": "d/f"},
}


def _base(root: Path) -> None:
    (root / "d").mkdir(mode=0o755)
    os.chmod(root / "d", 0o755)
    (root / "d" / "f").write_bytes(b"x")
    os.chmod(root / "d" / "f", 0o644)
    os.link(root / "d" / "f", root / "d" / "g")
    os.symlink("d/f", root / "s")


def _unlink_g(root: Path) -> None:
    os.unlink(root / "d" / "g")
    (root / "d" / "g").write_bytes(b"x")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda r: (r / "extra").write_bytes(b""), "extra: unexpected file"),
        (lambda r: os.unlink(r / "s"), "s: missing"),
        (lambda r: os.chmod(r / "d" / "f", 0o600), "d/f: mode: expected 0644, got 0600"),
        (lambda r: (r / "d" / "f").write_bytes(b"y"), "d/f: content"),
        (_unlink_g, "d/g: hardlink group"),
        (lambda r: (os.unlink(r / "s"), os.symlink("elsewhere", r / "s")), "s: target"),
        (lambda r: (os.unlink(r / "s"), (r / "s").mkdir()), "s: type: expected symlink, got dir"),
    ],
    ids=["extra", "missing", "mode", "content", "hardlink", "target", "type"],
)
def test_check_tree_reports_each_difference(tmp_path: Path, change: Any, problem: str) -> None:
    """A tree that differs from the expectation in one way is reported with that difference."""
    _base(tmp_path)
    assert check_tree(str(tmp_path), BASE_TREE) == []
    change(tmp_path)
    problems = check_tree(str(tmp_path), BASE_TREE)
    assert any(p.startswith(problem) for p in problems), problems


def test_check_tree_allows_only_directories_as_implied_ancestors(tmp_path: Path) -> None:
    """Unlisted ancestors of listed paths must be directories; anything else there is reported."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c").write_bytes(b"")
    expected = {"a/b/c": {"type": "file", "content": ""}}
    assert check_tree(str(tmp_path), expected) == []
    shutil.rmtree(tmp_path / "a")
    (tmp_path / "a").write_bytes(b"")
    problems = check_tree(str(tmp_path), expected)
    assert "a: type: expected dir, got file" in problems
    assert "a/b/c: missing (expected file)" in problems


# -- loading ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"name": "x", "layers": [[]]}, "exactly one of"),
        ({"name": "x", "layers": [[]], "expected": {}, "error": "unsafe"}, "exactly one of"),
        ({"name": "x", "layers": [[]], "error": "boom"}, "error must be"),
        ({"name": "Bad_Name", "layers": [[]], "expected": {}}, "bad case name"),
        ({"name": "x", "layers": [[{"path": "a", "type": "socket"}]], "expected": {}}, "unknown"),
        ({"name": "x", "layers": "a", "expected": {}}, "list of lists"),
    ],
    ids=["neither", "both", "error-kind", "name", "entry-type", "layers"],
)
def test_load_cases_refuses_malformed_cases(tmp_path: Path, doc: Any, message: str) -> None:
    """A malformed case file is bad input naming what is wrong."""
    (tmp_path / "bad.json").write_text(json.dumps([doc]))
    with pytest.raises(BadInputError, match=message):
        load_cases(tmp_path)


def test_load_cases_refuses_duplicate_names(tmp_path: Path) -> None:
    """Two cases with one name are refused."""
    doc = {"name": "x", "layers": [[]], "expected": {}}
    (tmp_path / "a.json").write_text(json.dumps([doc]))
    (tmp_path / "b.json").write_text(json.dumps([doc]))
    with pytest.raises(BadInputError, match="duplicate case names: x"):
        load_cases(tmp_path)


# -- extractor corpus OUT -----------------------------------------------------------------------


def _hashes(top: Path) -> dict[str, str]:
    return {
        str(p.relative_to(top)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(top.rglob("*"))
        if p.is_file()
    }


def test_corpus_command_writes_every_case_reproducibly(tmp_path: Path) -> None:
    """``extractor corpus OUT`` writes layers, both images, the expectation and the canary."""
    out = tmp_path / "out"
    assert main(["corpus", str(out), "-q"]) == 0
    assert sorted(os.listdir(out)) == sorted(c.name for c in CASES)
    for case in CASES:
        top = out / case.name
        layers = sorted(os.listdir(top / "layers"))
        assert layers == [f"{i}.tar" for i in range(1, len(case.layers) + 1)]
        for layer in layers:
            with tarfile.open(top / "layers" / layer) as tf:
                assert len(tf.getmembers()) == len(case.layers[int(layer[:-4]) - 1])
        index = json.loads((top / "oci" / "index.json").read_text())
        assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "case"
        with tarfile.open(top / "docker-save.tar") as tf:
            assert "manifest.json" in tf.getnames()
        doc = json.loads((top / "expected.json").read_text())
        assert doc["name"] == case.name and ("error" in doc) == (case.error is not None)
        assert (top / "outside" / "victim").read_text() == "host file\n"
        assert "@OUTSIDE@" not in json.dumps(doc)
    first = _hashes(out)
    shutil.rmtree(out)
    assert main(["corpus", str(out), "-q"]) == 0
    assert _hashes(out) == first


def test_corpus_expected_tree_substitutes_the_canary_path() -> None:
    """``@OUTSIDE@`` becomes the absolute path in targets and a root-relative path in keys."""
    case = next(c for c in CASES if c.name == "escape-symlink-parent-earlier-layer")
    tree = case.expected_tree("/srv/run/outside")
    assert tree == {
        "etc": {"type": "symlink", "target": "/srv/run/outside"},
        "srv/run/outside/passwd": {"type": "file", "content": "pwned"},
    }


def test_default_corpus_dir_is_the_source_tree() -> None:
    """The default corpus is testdata/corpus beside the package."""
    assert default_corpus_dir() == Path(__file__).resolve().parent.parent / "testdata" / "corpus"
