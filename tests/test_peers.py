"""Differential tests: the engine against ``umoci raw unpack`` on the same generated images.

Each case writes a minimal OCI image layout (``oci-layout``, ``index.json``, config with
``rootfs.diff_ids``, manifest, layer blobs), unpacks it with umoci as root, applies the very same
layer blobs with ``extractor.apply_layers``, and compares the two trees: type, mode, owner,
content, symlink target, xattrs, which paths share an inode, and file/symlink/directory mtimes.

Where umoci (0.4.7 here) and the rules disagree, the case is left out of the comparison, never
"fixed" to match umoci (see /work/shared/notes/peers-and-rules.md):

- The root directory's own metadata: umoci sets its mtime to the epoch; nothing in a layer
  describes it.
- A hardlink listed before its target in the same layer: umoci fails ("link: no such file or
  directory", a FIXME in its code); the rules resolve it when the target arrives. Likewise a
  hardlink whose target is written again later in the same layer: the engine makes the link
  again so it never keeps a stale inode, umoci keeps the first inode.
- An entry below a non-directory: umoci 0.4.7 fails ("mkdir parent: not a directory"), 0.5.0
  and the rules replace the parent by a directory.
- An opaque marker for a directory that does not exist: umoci creates nothing, the engine makes
  the directory the marker lives in. Nothing specifies it. The same difference shows when an
  opaque marker is followed, in one layer, by a whiteout of its directory (or of a parent) or
  by an opaque marker of a parent: the engine keeps the directory as this layer's, umoci
  removes it. A real diff never holds both.
- Malformed whiteouts (umoci does not validate them) and AUFS ``.wh..wh.plnk`` (umoci does not
  handle it) are not generated.
- Directory mtimes are compared except where umoci's is the time of the unpack: directories no
  entry describes (both sides give "now") and directories whose lower contents a whiteout or
  opaque marker later in the same layer removed (umoci restores the times of the marker's
  parent but not of the directory it emptied, although that directory's entry gave one).
- The setgid bit of those same directories (umoci's time of the unpack marks them): a missing
  parent that umoci creates inside a setgid directory inherits the bit from the kernel, while
  the rules (and the engine) make missing parents 0755 exactly. Nothing in the layer
  describes such a directory.

Symlinks are kept as leaves in the generated stacks (no entry below one): both tools follow them
confined to the root, and confinement is not what this file compares.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import os
import posixpath
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from builders import MTIME, Layer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extractor import apply_layers

UMOCI = shutil.which("umoci")
NS = 1_000_000_000

pytestmark = [
    pytest.mark.peer,
    pytest.mark.root,
    pytest.mark.skipif(
        UMOCI is None,
        reason="umoci is not installed (apt-get install umoci; `make system-deps` does it)",
    ),
]

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"

# --------------------------------------------------------------------------------------------
# A minimal OCI image layout


def _put_blob(layout: Path, data: bytes) -> tuple[str, Path]:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"sha256:{digest}", path


def _descriptor(layout: Path, media_type: str, data: bytes) -> tuple[dict[str, object], Path]:
    digest, path = _put_blob(layout, data)
    return {"mediaType": media_type, "digest": digest, "size": len(data)}, path


def _write_layout(layout: Path, blobs: list[bytes], tag: str = "latest") -> list[Path]:
    """Write an OCI image layout holding one image of ``blobs`` (plain or gzip tars).

    Returns the layer blob paths, oldest first, so the engine can apply the very same files.
    """
    layout.mkdir(parents=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    layers, paths, diff_ids = [], [], []
    for blob in blobs:
        gzipped = blob[:2] == b"\x1f\x8b"
        tar = gzip.decompress(blob) if gzipped else blob
        diff_ids.append(f"sha256:{hashlib.sha256(tar).hexdigest()}")
        desc, path = _descriptor(layout, LAYER_TAR + ("+gzip" if gzipped else ""), blob)
        layers.append(desc)
        paths.append(path)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"layer {i}"} for i in range(len(blobs))],
    }
    config_desc, _ = _descriptor(layout, CONFIG, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config_desc,
        "layers": layers,
    }
    manifest_desc, _ = _descriptor(layout, MANIFEST, json.dumps(manifest).encode())
    manifest_desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
    index = {"schemaVersion": 2, "manifests": [manifest_desc]}
    (layout / "index.json").write_text(json.dumps(index))
    return paths


def _umoci_unpack(layout: Path, dest: Path) -> subprocess.CompletedProcess[str]:
    assert UMOCI is not None
    return subprocess.run(
        [UMOCI, "raw", "unpack", "--image", f"{layout}:latest", str(dest)],
        capture_output=True,
        text=True,
        timeout=60,
    )


# --------------------------------------------------------------------------------------------
# Observing and comparing trees

Tree = dict[str, dict[str, object]]


def _observe(root: Path) -> tuple[Tree, set[frozenset[str]]]:
    """Every path below ``root`` (not the root itself) with its attributes; hardlink groups."""
    tree: Tree = {}
    inodes: dict[tuple[int, int], set[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st_ = os.lstat(full)
            fmt = stat.S_IFMT(st_.st_mode)
            attrs: dict[str, object] = {
                "type": {
                    stat.S_IFDIR: "dir",
                    stat.S_IFREG: "file",
                    stat.S_IFLNK: "symlink",
                    stat.S_IFIFO: "fifo",
                }.get(fmt, f"{fmt:o}"),
                "owner": (st_.st_uid, st_.st_gid),
                "mtime": st_.st_mtime_ns,
                "xattrs": {
                    k: os.getxattr(full, k, follow_symlinks=False)
                    for k in sorted(os.listxattr(full, follow_symlinks=False))
                },
            }
            if fmt != stat.S_IFLNK:
                attrs["mode"] = f"{stat.S_IMODE(st_.st_mode):04o}"
            if fmt == stat.S_IFREG:
                attrs["data"] = Path(full).read_bytes()
            elif fmt == stat.S_IFLNK:
                attrs["target"] = os.readlink(full)
            if fmt != stat.S_IFDIR:
                inodes.setdefault((st_.st_dev, st_.st_ino), set()).add(rel)
            tree[rel] = attrs
    return tree, {frozenset(g) for g in inodes.values() if len(g) > 1}


def _unpack_time(mtime: object, started_ns: int) -> bool:
    return isinstance(mtime, int) and mtime >= started_ns


def _without_setgid(mode: object) -> int:
    return int(str(mode), 8) & ~stat.S_ISGID


def _differences(umoci: Path, ours: Path, started_ns: int) -> list[str]:
    """What differs between the two trees, ignoring only the documented exclusions."""
    theirs_tree, theirs_groups = _observe(umoci)
    our_tree, our_groups = _observe(ours)
    out = []
    for path in sorted(set(theirs_tree) | set(our_tree)):
        if path not in our_tree:
            out.append(f"{path}: missing (umoci has {theirs_tree[path]})")
            continue
        if path not in theirs_tree:
            out.append(f"{path}: unexpected {our_tree[path]} (umoci has nothing)")
            continue
        theirs, mine = theirs_tree[path], our_tree[path]
        for key in sorted(set(theirs) | set(mine)):
            if theirs["type"] == "dir" and _unpack_time(theirs["mtime"], started_ns):
                if key == "mtime":
                    continue  # umoci left the time of the unpack on this directory (see the top)
                if key == "mode" and _without_setgid(theirs[key]) == _without_setgid(mine[key]):
                    continue  # an implicit directory in a setgid one (see the top)
            if theirs.get(key) != mine.get(key):
                out.append(f"{path}: {key} is {mine.get(key)!r}, umoci {theirs.get(key)!r}")
    if theirs_groups != our_groups:
        out.append(
            f"hardlink groups are {sorted(map(sorted, our_groups))}, "
            f"umoci {sorted(map(sorted, theirs_groups))}"
        )
    return out


def _compare_with_umoci(base: Path, blobs: list[bytes]) -> list[str]:
    """Unpack ``blobs`` with umoci and with the engine under ``base``; the differences."""
    started_ns = time.time_ns()
    paths = _write_layout(base / "image", blobs)
    proc = _umoci_unpack(base / "image", base / "umoci")
    assert proc.returncode == 0, f"umoci failed: {proc.stderr.strip()}"
    apply_layers(base / "ours", paths)
    return _differences(base / "umoci", base / "ours", started_ns)


# --------------------------------------------------------------------------------------------
# Hand-written stacks

M = MTIME


def _blobs(*layers: tuple[Layer, str]) -> list[bytes]:
    return [layer.bytes(compression) for layer, compression in layers]


def _whiteouts() -> list[bytes]:
    lower = (
        Layer()
        .dir("etc", mtime=M + 1)
        .file("etc/a", b"a", mtime=M + 2)
        .file("etc/b", b"b", mtime=M + 3)
        .dir("etc/sub", 0o750, mtime=M + 4)
        .file("etc/sub/x", b"x", mtime=M + 5)
        .dir("etc/sub/deep", mtime=M + 6)
        .file("etc/sub/deep/y", b"y")
        .dir("real", mtime=M + 7)
        .file("real/kept", b"kept")
        .symlink("etc/link", "../real", mtime=M + 8)
    )
    upper = (
        Layer()
        .dir("etc", mtime=M + 20)
        .whiteout("etc/a")  # a file
        .whiteout("etc/sub")  # a whole tree
        .whiteout("etc/link")  # only the link: real/kept stays
        .whiteout("etc/missing")  # nothing to hide
        .file("etc/b", b"new b", mtime=M + 21)
        .whiteout("etc/b")  # after a same-layer file of that name: the new file stays
        .whiteout("nowhere/at/all")
    )
    return _blobs((lower, "gzip"), (upper, "none"))


def _whiteout_then_recreate() -> list[bytes]:
    lower = Layer().dir("a", 0o700, mtime=M).file("a/old", b"old").dir("a/d").file("a/d/f")
    upper = (
        Layer()
        .whiteout("a")  # before the new contents, as the spec says layers SHOULD be made
        .dir("a", 0o711, mtime=M + 10)
        .file("a/new", b"new", mtime=M + 11)
        .dir("a/d", mtime=M + 12)
    )
    return _blobs((lower, "none"), (upper, "gzip"))


def _opaque_before_siblings() -> list[bytes]:
    lower = (
        Layer()
        .dir("a", mtime=M)
        .file("a/f", b"lower")
        .dir("a/sub", mtime=M + 1)
        .file("a/sub/x", b"x")
        .dir("b", mtime=M + 2)
        .file("b/kept", b"b")
    )
    upper = (
        Layer()
        .dir("a", 0o750, mtime=M + 10)
        .opaque("a")
        .file("a/g", b"upper", mtime=M + 11)
        .dir("a/sub", mtime=M + 12)
    )
    return _blobs((lower, "gzip"), (upper, "gzip"))


def _opaque_after_siblings() -> list[bytes]:
    lower = (
        Layer()
        .dir("a", mtime=M)
        .file("a/f", b"lower")
        .file("a/g", b"lower g")
        .dir("a/sub", mtime=M + 1)
        .file("a/sub/x", b"x")
    )
    upper = (
        Layer()
        .dir("a", 0o750, mtime=M + 10)
        .file("a/g", b"upper", mtime=M + 11)
        .dir("a/sub", 0o700, mtime=M + 12)
        .file("a/sub/y", b"y", mtime=M + 13)
        .opaque("a")  # hides a/f and a/sub/x, keeps everything this layer put there
    )
    return _blobs((lower, "none"), (upper, "none"))


def _replacements() -> list[bytes]:
    lower = (
        Layer()
        .file("f2d", b"file", mtime=M)
        .dir("d2f", mtime=M + 1)
        .file("d2f/child", b"c")
        .dir("target", mtime=M + 2)
        .file("target/t", b"t")
        .symlink("s2f", "target", mtime=M + 3)
        .file("f2s", b"file", mtime=M + 4)
        .dir("d2s", mtime=M + 5)
        .file("d2s/child", b"c")
        .symlink("s2d", "target", mtime=M + 6)
        .dir("d2d", 0o755, mtime=M + 7)
        .file("d2d/kept", b"kept")
        .symlink("s2s", "old", mtime=M + 8)
    )
    upper = (
        Layer()
        .dir("f2d", 0o700, mtime=M + 20)  # file -> dir
        .file("f2d/new", b"n", mtime=M + 21)
        .file("d2f", b"now a file", 0o600, mtime=M + 22)  # dir -> file
        .file("s2f", b"not through the link", mtime=M + 23)  # symlink -> file
        .symlink("f2s", "target/t", mtime=M + 24)  # file -> symlink
        .symlink("d2s", "/target", mtime=M + 25)  # dir -> symlink
        .dir("s2d", 0o750, mtime=M + 26)  # symlink -> dir (target/ untouched)
        .dir("d2d", 0o711, mtime=M + 27)  # dir over dir: keeps d2d/kept
        .symlink("s2s", "new", mtime=M + 28)  # symlink -> symlink
    )
    return _blobs((lower, "gzip"), (upper, "none"))


def _hardlinks_to_lower() -> list[bytes]:
    lower = (
        Layer()
        .dir("bin", mtime=M)
        .file("bin/busybox", b"BUSYBOX", 0o755, mtime=M + 1)
        .hardlink("bin/sh", "bin/busybox")
        .file("bin/other", b"other", mtime=M + 2)
        .symlink("bin/link", "busybox", mtime=M + 3)
        .dir("sbin", mtime=M + 4)
    )
    upper = (
        Layer()
        .dir("sbin", mtime=M + 10)
        .hardlink("sbin/ls", "bin/busybox")  # to a lower file
        .hardlink("sbin/sh2", "bin/sh")  # to a lower alias
        .hardlink("sbin/link2", "bin/link")  # to a lower symlink: the link itself
        .file("bin/other", b"rewritten", mtime=M + 11)
        .hardlink("sbin/other", "bin/other")  # to this layer's file
    )
    top = (
        Layer()
        .file("bin/sh", b"not busybox", mtime=M + 20)  # alias replaced: the others keep content
        .whiteout("bin/busybox")  # target gone: its other names keep the content
    )
    return _blobs((lower, "none"), (upper, "gzip"), (top, "none"))


def _kaniko_282() -> list[bytes]:
    # vito/broken-base: alpine + git, then `rm /usr/bin/git && ln -s
    # /usr/libexec/git-core/git /usr/bin/git`.
    lower = (
        Layer()
        .dir("usr", mtime=M)
        .dir("usr/bin", mtime=M + 1)
        .file("usr/bin/git", b"\x7fELF git binary", 0o755, mtime=M + 2)
        .dir("usr/libexec", mtime=M + 3)
        .dir("usr/libexec/git-core", mtime=M + 4)
        .hardlink("usr/libexec/git-core/git", "usr/bin/git")
    )
    upper = (
        Layer()
        .dir("usr", mtime=M + 10)
        .dir("usr/bin", mtime=M + 11)
        .whiteout("usr/bin/git")
        .symlink("usr/bin/git", "/usr/libexec/git-core/git", mtime=M + 12)
    )
    return _blobs((lower, "gzip"), (upper, "gzip"))


def _metadata() -> list[bytes]:
    lower = (
        Layer()
        .dir("srv", 0o2775, uid=1000, gid=1000, mtime=M)
        .file("srv/suid", b"s", 0o4755, uid=0, gid=0, mtime=M + 1)
        .file("srv/owned", b"o", 0o640, uid=1234, gid=5678, mtime=M + 2)
        .symlink("srv/link", "owned", uid=42, gid=43, mtime=M + 3)
        .fifo("srv/pipe", 0o620, uid=7, gid=8, mtime=M + 4)
        .dir("tmp", 0o1777, mtime=M + 5)
        .dir("ro", 0o555, mtime=M + 6)
        .dir("x", 0o755, xattrs={"user.old": b"1", "trusted.t": b"t"}, mtime=M + 7)
        .file("x/f", b"f", xattrs={"user.note": b"hi"}, mtime=M + 8)
    )
    upper = (
        Layer()
        .file("ro/late", b"into a read-only directory", 0o400, mtime=M + 10)
        .dir("x", 0o700, uid=3, gid=4, xattrs={"user.new": b"2"}, mtime=M + 11)  # stale go
        .file("tmp/f", b"t", 0o2644, uid=9, gid=9, mtime=M + 12)
    )
    return _blobs((lower, "gzip"), (upper, "none"))


# What the rules say about a few paths of each result (checked on the engine's tree, so a
# mistake both tools share cannot hide): None = absent, "dir", bytes = a file's content,
# "-> T" = a symlink to T.
Expect = dict[str, object]

CASES: dict[str, tuple[Callable[[], list[bytes]], Expect]] = {
    "whiteouts": (
        _whiteouts,
        {
            "etc/a": None,
            "etc/sub": None,
            "etc/link": None,
            "real/kept": b"kept",
            "etc/b": b"new b",
            "etc/missing": None,
        },
    ),
    "whiteout-then-recreate": (
        _whiteout_then_recreate,
        {"a": "dir", "a/old": None, "a/d": "dir", "a/d/f": None, "a/new": b"new"},
    ),
    "opaque-before-siblings": (
        _opaque_before_siblings,
        {"a/f": None, "a/sub": "dir", "a/sub/x": None, "a/g": b"upper", "b/kept": b"b"},
    ),
    "opaque-after-siblings": (
        _opaque_after_siblings,
        {"a/f": None, "a/g": b"upper", "a/sub/x": None, "a/sub/y": b"y"},
    ),
    "file-dir-symlink-replacements": (
        _replacements,
        {
            "f2d/new": b"n",
            "d2f": b"now a file",
            "s2f": b"not through the link",
            "target/t": b"t",
            "f2s": "-> target/t",
            "d2s": "-> /target",
            "s2d": "dir",
            "d2d/kept": b"kept",
            "s2s": "-> new",
        },
    ),
    "hardlinks-to-lower-layers": (
        _hardlinks_to_lower,
        {
            "bin/busybox": None,
            "bin/sh": b"not busybox",
            "sbin/ls": b"BUSYBOX",
            "sbin/sh2": b"BUSYBOX",
            "sbin/link2": "-> busybox",
            "sbin/other": b"rewritten",
        },
    ),
    "kaniko-282-git": (
        _kaniko_282,
        {
            "usr/bin/git": "-> /usr/libexec/git-core/git",
            "usr/libexec/git-core/git": b"\x7fELF git binary",
        },
    ),
    "owners-modes-xattrs-fifo": (
        _metadata,
        {"ro/late": b"into a read-only directory", "x/f": b"f", "srv/link": "-> owned"},
    ),
}


def _what(path: Path) -> object:
    if not os.path.lexists(path):
        return None
    if path.is_symlink():
        return f"-> {os.readlink(path)}"
    if path.is_dir():
        return "dir"
    return path.read_bytes()


@pytest.mark.parametrize("name", list(CASES))
def test_hand_written_stacks_match_umoci(tmp_path: Path, name: str) -> None:
    """Each hand-written stack unpacks to the same tree with umoci and with the engine."""
    build, expect = CASES[name]
    problems = _compare_with_umoci(tmp_path, build())
    assert not problems, "differs from umoci:\n" + "\n".join(problems)
    assert {p: _what(tmp_path / "ours" / p) for p in expect} == expect


def test_hardlinks_share_inodes_as_the_rules_say(tmp_path: Path) -> None:
    """Links to lower files share their inode; a replaced alias and a whited-out name do not."""
    assert not _compare_with_umoci(tmp_path, _hardlinks_to_lower())
    _, groups = _observe(tmp_path / "ours")
    assert groups == {
        frozenset({"sbin/ls", "sbin/sh2"}),  # busybox's inode, its first two names gone
        frozenset({"bin/link", "sbin/link2"}),  # the symlink itself
        frozenset({"bin/other", "sbin/other"}),
    }


def test_kaniko_282_keeps_the_git_binary(tmp_path: Path) -> None:
    """The kaniko #282 stack leaves the binary at git-core/git and a symlink at usr/bin/git."""
    assert not _compare_with_umoci(tmp_path, _kaniko_282())
    binary = tmp_path / "ours/usr/libexec/git-core/git"
    assert not binary.is_symlink()
    assert stat.S_IMODE(binary.stat().st_mode) == 0o755
    assert binary.stat().st_nlink == 1  # its lower alias usr/bin/git was whited out


def test_the_comparison_sees_a_difference(tmp_path: Path) -> None:
    """The tree comparison itself reports a content, mode or mtime change (it can fail)."""
    blobs = _blobs((Layer().dir("d", mtime=M).file("d/f", b"x", mtime=M + 1), "none"))
    assert not _compare_with_umoci(tmp_path, blobs)
    (tmp_path / "ours/d/f").write_bytes(b"y")
    os.utime(tmp_path / "ours/d/f", ns=(0, (M + 1) * NS))
    os.chmod(tmp_path / "ours/d", 0o700)
    os.utime(tmp_path / "ours/d", ns=(0, (M + 5) * NS))
    problems = _differences(tmp_path / "umoci", tmp_path / "ours", time.time_ns())
    assert {p.split(" is ")[0] for p in problems} == {"d: mode", "d: mtime", "d/f: data"}


# --------------------------------------------------------------------------------------------
# Generated stacks

NAMES = "abc"
SPACE = ["/".join(p) for n in (1, 2, 3) for p in itertools.product(NAMES, repeat=n)]
KINDS = ("file", "file", "file", "dir", "dir", "symlink", "hardlink", "whiteout", "opaque")
FILE_MODES = (0o644, 0o600, 0o755, 0o4755)
DIR_MODES = (0o755, 0o700, 0o2775, 0o555)
OWNERS = ((0, 0), (1000, 1000), (0, 42))


def _ancestors(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _within(path: str, top: str) -> bool:
    return not top or path == top or path.startswith(top + "/")


def _drop(kinds: dict[str, str], top: str, keep: set[str]) -> None:
    """Forget ``top`` and everything below it, except the paths in ``keep``."""
    for path in [p for p in kinds if p and _within(p, top) and p not in keep]:
        del kinds[path]


class PeerStack:
    """Layer blobs with a listing of their entries; the listing is what a failure shows."""

    def __init__(self, blobs: list[bytes], listing: str):
        self.blobs = blobs
        self.listing = listing

    def __repr__(self) -> str:
        return "\n" + self.listing


@st.composite
def peer_stacks(draw: st.DrawFn) -> PeerStack:
    """2 or 3 layers umoci 0.4.7 can apply, with a readable listing of their entries.

    The generator tracks what each path is, in tar order, and draws only entries that stay
    clear of the exclusions at the top of this file: nothing below a non-directory, hardlinks
    only to a non-directory that exists at that point and is not written again in the layer,
    opaque markers only in existing directories, no whiteout or opaque marker over a directory
    that holds an opaque marker of the same layer.
    """
    kinds: dict[str, str] = {"": "dir"}  # path -> dir / file / symlink
    blobs: list[bytes] = []
    listing: list[str] = []
    for index in range(draw(st.integers(2, 3))):
        layer, upper, link_targets, opaque_dirs = Layer(), {""}, set[str](), set[str]()
        header = len(listing)
        listing.append(f"layer {index + 1}")
        for j in range(draw(st.integers(1, 10))):
            mtime = MTIME + index * 1000 + j
            kind = draw(st.sampled_from(KINDS))
            writable = [
                p
                for p in SPACE
                if all(kinds.get(a, "dir") == "dir" for a in _ancestors(p))
                and not any(_within(t, p) for t in link_targets)
            ]
            targets = sorted(p for p, k in kinds.items() if k != "dir")
            if kind == "opaque":
                # Not over an opaque marker of this layer below (see the whiteouts below).
                dirs = [
                    p
                    for p, k in kinds.items()
                    if k == "dir" and not any(_within(o, p) and o != p for o in opaque_dirs)
                ]
                if not dirs:
                    continue
                directory = draw(st.sampled_from(sorted(dirs)))
                layer.opaque(directory)
                listing.append(f"    opaque   {directory}/")
                _drop(kinds, directory, upper | {directory})
                upper.add(directory)
                upper.update(_ancestors(directory))
                opaque_dirs.add(directory)
                continue
            if kind == "whiteout":
                # Not over this layer's opaque marker: the engine counts the marker as
                # content of its directory (it makes the directory), umoci does not.
                choices = [p for p in writable if not any(_within(o, p) for o in opaque_dirs)]
                if not choices:
                    continue
                path = draw(st.sampled_from(choices))
                layer.whiteout(path)
                listing.append(f"    whiteout {path}")
                _drop(kinds, path, upper)
                continue
            if kind == "hardlink" and not targets:
                kind = "file"
            if kind == "hardlink":
                target = draw(st.sampled_from(targets))
                choices = [p for p in writable if p != target and not _within(target, p)]
                if not choices:
                    continue
                path = draw(st.sampled_from(choices))
            elif writable:
                path = draw(st.sampled_from(writable))
            else:
                continue
            for a in _ancestors(path):
                kinds.setdefault(a, "dir")
            upper.add(path)
            upper.update(_ancestors(path))
            uid, gid = draw(st.sampled_from(OWNERS))
            if kind == "dir":
                mode = draw(st.sampled_from(DIR_MODES))
                layer.dir(path, mode, uid, gid, mtime)
                listing.append(f"    dir      {path} mode={mode:o} owner={uid}:{gid}")
                if kinds.get(path) != "dir":
                    _drop(kinds, path, set())
                kinds[path] = "dir"
                continue
            _drop(kinds, path, set())
            if kind == "file":
                data = draw(st.binary(max_size=5))
                mode = draw(st.sampled_from(FILE_MODES))
                layer.file(path, data, mode, uid, gid, mtime)
                listing.append(f"    file     {path} mode={mode:o} owner={uid}:{gid} {data!r}")
                kinds[path] = "file"
            elif kind == "symlink":
                other = draw(st.sampled_from(SPACE))
                link = posixpath.relpath(other, posixpath.dirname(path) or ".")
                link = draw(st.sampled_from((link, "/" + other, "../../dangling")))
                layer.symlink(path, link, uid, gid, mtime)
                listing.append(f"    symlink  {path} -> {link!r}")
                kinds[path] = "symlink"
            else:
                layer.hardlink(path, target)
                listing.append(f"    hardlink {path} => {target}")
                kinds[path] = kinds[target]
                link_targets.add(target)
        compression = draw(st.sampled_from(("gzip", "none")))
        listing[header] += f" ({compression}):"
        blobs.append(layer.bytes(compression))
    return PeerStack(blobs, "\n".join(listing))


@settings(
    max_examples=200,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(stack=peer_stacks())
def test_generated_stacks_match_umoci(stack: PeerStack) -> None:
    """Generated stacks of files, dirs, symlinks, hardlinks and whiteouts unpack like umoci."""
    with tempfile.TemporaryDirectory(prefix="extractor-peer-", dir="/dev/shm") as base:
        problems = _compare_with_umoci(Path(base), stack.blobs)
    assert not problems, "differs from umoci:\n" + "\n".join(problems)
