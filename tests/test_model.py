"""Property test: random layer stacks give the tree an in-memory model of the OCI rules predicts.

The model below is written from the rules (OCI image-spec layer.md plus the project's issue 2),
not from the engine: it never imports ``extractor.changeset`` or ``extractor.rootfs``. Per layer
it first applies the layer's whiteouts and opaque markers to the lower state (they only hide what
lower layers had), then the layer's entries in tar order:

- an entry replaces whatever is at its path, except that a directory over a directory keeps the
  children and takes the new attributes;
- missing parents are created as directories with mode 0755, and a non-directory parent is
  replaced by such a directory; an opaque marker ``D/.wh..wh..opq`` is a file inside ``D``, so at
  its place in the tar it makes ``D`` a directory in the same way (whiteouts create nothing);
- a hardlink shares the inode its target names; a directory target is an error; a target that
  does not exist yet is waited for: the link is made when the target arrives, and it keeps
  following its target for the rest of the layer (each later write of the target makes the link
  again, so it never keeps a stale inode) unless a later entry at the link's own path overrides
  it; a link still waiting at the end of its layer is an error.

The generator draws paths from the names a, b, c up to depth 3, so replacements, whiteouts of
existing things and collisions are frequent. ``_keep_unambiguous`` drops the few entries whose
outcome the rules do not decide (each case is explained there); what remains is applied with
``extractor.apply_layers`` and compared with the model: type, mode, owner (as root), mtime,
content, symlink target and which paths share an inode; or both must fail.
"""

from __future__ import annotations

import io
import os
import posixpath
import stat
import tempfile
from dataclasses import dataclass, replace

from builders import Layer
from hypothesis import example, given, note, settings
from hypothesis import strategies as st

from extractor import ApplyOptions, ExtractorError, apply_layers

IS_ROOT = os.geteuid() == 0
NS = 1_000_000_000
BASE_MTIME = 1_500_000_000

# --------------------------------------------------------------------------------------------
# Entries


@dataclass(frozen=True)
class Op:
    """One tar entry of a generated layer."""

    kind: str  # file, dir, symlink, hardlink, whiteout, opaque
    path: str  # for an opaque marker: its directory ("" is the root)
    target: str = ""  # symlink target (verbatim) or hardlink target path
    data: bytes = b""
    mode: int = 0
    owner: tuple[int, int] = (0, 0)
    mtime: int = BASE_MTIME

    @property
    def member(self) -> str:
        """The tar member name this entry is stored under."""
        if self.kind == "whiteout":
            head, _, base = self.path.rpartition("/")
            return f"{head}/.wh.{base}" if head else f".wh.{base}"
        if self.kind == "opaque":
            return f"{self.path}/.wh..wh..opq" if self.path else ".wh..wh..opq"
        return self.path

    def __str__(self) -> str:
        own = f"{self.owner[0]}:{self.owner[1]}"
        if self.kind == "file":
            return f"file     {self.path} mode={self.mode:o} owner={own} data={self.data!r}"
        if self.kind == "dir":
            return f"dir      {self.path} mode={self.mode:o} owner={own}"
        if self.kind == "symlink":
            return f"symlink  {self.path} -> {self.target!r} owner={own}"
        if self.kind == "hardlink":
            return f"hardlink {self.path} => {self.target}"
        return f"{self.kind:8} {self.member}"


def _within(path: str, top: str) -> bool:
    return path == top or _below(path, top)


def _below(path: str, top: str) -> bool:
    """Whether ``path`` is strictly inside ``top`` ("" is the root)."""
    return path != top and (not top or path.startswith(top + "/"))


def _ancestors(path: str) -> list[str]:
    """Proper ancestors of ``path``, excluding the root, outermost first."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


# --------------------------------------------------------------------------------------------
# The model


class ModelError(Exception):
    """The rules say this stack must be refused."""


class Inode:
    """A non-directory: a regular file or a symlink. Identity is the inode (hardlinks share it)."""

    def __init__(self, op: Op):
        self.kind = op.kind
        self.data = op.data if op.kind == "file" else op.target
        self.mode = op.mode
        self.owner = op.owner
        self.mtime = op.mtime


@dataclass
class Dir:
    """A directory. ``None`` means "not decided by the rules": not compared."""

    mode: int | None
    owner: tuple[int, int] | None
    mtime: int | None  # None for directories no entry described (implicit parents)


class Model:
    """The tree as the rules define it: normalised path -> Dir or Inode; "" is the root."""

    def __init__(self) -> None:
        self.tree: dict[str, Dir | Inode] = {"": Dir(None, None, None)}
        self.links: dict[str, str] = {}  # this layer's hardlinks: link path -> target path
        self.waiting: set[str] = set()  # links whose target has not arrived yet
        self.hidden_dirs: set[str] = set()

    def symlinks(self) -> set[str]:
        """Paths that are symlinks now."""
        return {p for p, n in self.tree.items() if isinstance(n, Inode) and n.kind == "symlink"}

    def apply(self, layer: list[Op]) -> None:
        """Apply one layer, or raise ModelError."""
        self.links, self.waiting, self.hidden_dirs = {}, set(), set()
        # 1. Whiteouts and opaque markers hide lower content, wherever they are in the tar.
        for op in layer:
            if op.kind == "whiteout":
                self._hide([p for p in self.tree if _within(p, op.path)])
            elif op.kind == "opaque" and isinstance(self.tree.get(op.path), Dir):
                self._hide([p for p in self.tree if _below(p, op.path)])
        # 2. The entries, in tar order.
        for op in layer:
            if op.kind == "whiteout":
                continue
            if op.kind == "opaque":
                self._make_parents(f"{op.path}/x" if op.path else "x")
                continue
            self.links.pop(op.path, None)  # a new entry at a link's path overrides the link
            self.waiting.discard(op.path)
            if op.kind == "hardlink":
                self._link(op.path, op.target)
            else:
                self._write(op)
                self._follow(op.path)
        if self.waiting:
            first = min(self.waiting)
            raise ModelError(f"hardlink {first} => {self.links[first]}: target never arrived")

    def _hide(self, paths: list[str]) -> None:
        for p in paths:
            node = self.tree.pop(p)
            if isinstance(node, Dir):
                self.hidden_dirs.add(p)

    def _remove(self, path: str) -> None:
        for p in [p for p in self.tree if _within(p, path)]:
            del self.tree[p]

    def _make_parents(self, path: str) -> None:
        for a in _ancestors(path):
            node = self.tree.get(a)
            if isinstance(node, Dir):
                continue
            if node is not None:
                assert node.kind == "file", f"the generator let symlink parent {a} through"
                self._remove(a)
            # An implicit directory has mode 0755. Where this layer hid a lower directory of
            # the same name, the engine may instead keep the lower one if an entry below it
            # came before the whiteout in the tar; nothing in the layer describes the
            # directory either way, so its attributes are left undecided.
            if a in self.hidden_dirs:
                self.tree[a] = Dir(None, None, None)
            else:
                self.tree[a] = Dir(0o755, self._new_dir_owner(a), None)

    def _new_dir_owner(self, path: str) -> tuple[int, int] | None:
        # Made by root, so uid 0; the kernel gives a new directory the group of a setgid
        # parent (the rules say nothing about the owner of a directory no entry describes).
        parent = self.tree[path.rpartition("/")[0]]
        assert isinstance(parent, Dir)
        if not path.count("/"):
            return (0, 0)  # the root is not setgid
        if parent.mode is None or parent.owner is None:
            return None
        return (0, parent.owner[1]) if parent.mode & stat.S_ISGID else (0, 0)

    def _write(self, op: Op) -> None:
        self._make_parents(op.path)
        old = self.tree.get(op.path)
        if op.kind == "dir":
            if isinstance(old, Dir):
                old.mode, old.owner, old.mtime = op.mode, op.owner, op.mtime
                return
            self._remove(op.path)
            self.tree[op.path] = Dir(op.mode, op.owner, op.mtime)
            return
        self._remove(op.path)
        self.tree[op.path] = Inode(op)

    def _link(self, path: str, target: str) -> None:
        assert path == target or not (_below(path, target) or _below(target, path))
        self.links.pop(path, None)
        self.links[path] = target
        self.waiting.discard(path)
        node = self.tree.get(target)
        if target in self.waiting or node is None:
            self.waiting.add(path)  # made when the target arrives
            return
        if isinstance(node, Dir):
            raise ModelError(f"hardlink {path} => {target}: target is a directory")
        if self.tree.get(path) is node:
            return  # already that inode (also a link to itself)
        self._make_parents(path)
        self._remove(path)
        self.tree[path] = node
        self._follow(path)

    def _follow(self, written: str) -> None:
        """``written`` was just (re)written: links to it now share its new inode."""
        for path, target in list(self.links.items()):
            if target == written and path != written and self.links.get(path) == written:
                self._link(path, written)


# --------------------------------------------------------------------------------------------
# What the rules do not decide


def _keep_unambiguous(lower: Model, raw: list[Op], index: int) -> list[Op]:
    """Drop the entries whose outcome the rules leave open, and give the rest their mtimes.

    Dropped (everything else is kept):

    1. Entries below a symlink. The engine follows symlink parents (confined to the root) but the
       model keeps symlinks as leaves. Worse, the rules are ambiguous there: a whiteout below a
       symlink that this layer replaced or created resolves differently if whiteouts go first
       (the spec's view) or in tar order (what streaming unpackers do). So an entry is dropped if
       a proper ancestor of its path (of its directory and the directory itself, for an opaque
       marker; of the link and of its target, for a hardlink) may be a symlink at its place in
       the tar. Hardlinks count as possible symlinks (their target may be one).
    2. A hardlink nested with its target (``a => a/b`` or ``a/b => a``): making room for the
       link removes the target, or creating the link's parent replaces it; whether the target
       is taken before or after is not specified.
    3. A hardlink whose target a *later* whiteout or opaque marker of the same layer hides,
       when this layer has not written the target before the link. The spec applies the marker
       first (the target is gone: an error), a streaming unpacker links the lower inode first
       and then hides only the name. A real diff never holds this: the link would be a file.
    4. A hardlink followed, in the same layer, by an entry below it, or by a non-directory
       entry at one of its ancestors. Such a tar contradicts itself (a link has no children;
       a parent must be a directory); whether the link, which keeps following its target,
       comes back when the target is written again is not decided.
    """
    lower_links = lower.symlinks()  # lower symlinks still present at this point of the tar
    made_links: set[str] = set()  # paths this layer made (or may have made) symlinks
    written: set[str] = set()
    kept: list[Op] = []
    for j, op in enumerate(raw):
        risky = lower_links | made_links
        if op.kind == "opaque":
            parents = [*_ancestors(op.path), op.path] if op.path else []
        else:
            parents = _ancestors(op.path)
        if op.kind == "hardlink":
            parents += _ancestors(op.target)
        if any(p in risky for p in parents):
            continue  # case 1
        if op.kind == "hardlink" and _ambiguous_link(op, raw[j + 1 :], written):
            continue  # cases 2 to 4
        kept.append(replace(op, mtime=BASE_MTIME + index * 1000 + j))
        if op.kind == "whiteout":
            lower_links = {s for s in lower_links if not _within(s, op.path)}
        elif op.kind == "opaque":
            lower_links = {s for s in lower_links if not _below(s, op.path)}
        elif op.kind == "hardlink":
            made_links.add(op.path)
            written.add(op.path)
        else:
            written.add(op.path)
            if op.kind == "dir":
                lower_links.discard(op.path)
                made_links.discard(op.path)
            else:
                lower_links = {s for s in lower_links if not _within(s, op.path)}
                made_links = {s for s in made_links if not _within(s, op.path)}
                if op.kind == "symlink":
                    made_links.add(op.path)
    return kept


def _ambiguous_link(op: Op, later: list[Op], written: set[str]) -> bool:
    path, target = op.path, op.target
    if path != target and (_below(path, target) or _below(target, path)):
        return True  # case 2
    for o in later:
        if target not in written and (
            (o.kind == "whiteout" and _within(target, o.path))
            or (o.kind == "opaque" and _below(target, o.path))
        ):
            return True  # case 3
        if _below(o.member, path):
            return True  # case 4: an entry below the link
        if o.kind in ("file", "symlink", "hardlink") and _below(path, o.path):
            return True  # case 4: a non-directory at an ancestor of the link
    return False


def sanitize(raw: list[list[Op]]) -> list[list[Op]]:
    """The stack without ambiguous entries; layers after one the model refuses are dropped."""
    model = Model()
    out: list[list[Op]] = []
    for index, layer in enumerate(raw):
        kept = _keep_unambiguous(model, layer, index)
        out.append(kept)
        try:
            model.apply(kept)
        except ModelError:
            break
    return out


# --------------------------------------------------------------------------------------------
# Generation

NAMES = "abc"
FILE_MODES = (0o644, 0o600, 0o755, 0o4755, 0o444)
DIR_MODES = (0o755, 0o700, 0o2775, 0o1777, 0o555)
OWNERS = ((0, 0), (1000, 1000), (0, 42))
KINDS = ("file", "file", "dir", "dir", "symlink", "hardlink", "whiteout", "opaque")

paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join)
dir_paths = st.lists(st.sampled_from(NAMES), min_size=0, max_size=3).map("/".join)


@st.composite
def ops(draw: st.DrawFn, earlier: list[str]) -> Op:
    """One entry over the small name space; ``earlier`` lists the non-directories made so far."""
    kind = draw(st.sampled_from(KINDS))
    if kind == "opaque":
        return Op("opaque", draw(dir_paths))
    path = draw(paths)
    owner = draw(st.sampled_from(OWNERS))
    if kind == "file":
        data = draw(st.binary(max_size=6))
        earlier.append(path)
        return Op("file", path, data=data, mode=draw(st.sampled_from(FILE_MODES)), owner=owner)
    if kind == "dir":
        return Op("dir", path, mode=draw(st.sampled_from(DIR_MODES)), owner=owner)
    if kind == "symlink":
        style = draw(st.sampled_from(("relative", "absolute", "dangling")))
        other = draw(paths)
        if style == "relative":
            target = posixpath.relpath(other, posixpath.dirname(path) or ".")
        elif style == "absolute":
            target = "/" + other
        else:
            target = draw(st.sampled_from(("nowhere", "../../../gone", "/x/y")))
        earlier.append(path)
        return Op("symlink", path, target=target, owner=owner)
    if kind == "hardlink":
        # Mostly a name that held a file or symlink at some point, so links are often made;
        # sometimes any name (missing targets, directories, targets that come later).
        roll = draw(st.integers(0, 5))
        target = draw(st.sampled_from(earlier)) if earlier and roll else draw(paths)
        earlier.append(path)
        return Op("hardlink", path, target=target)
    return Op("whiteout", path)


@st.composite
def stacks(draw: st.DrawFn) -> list[list[Op]]:
    """2 to 4 layers of 1 to 12 entries each."""
    earlier: list[str] = []
    count = draw(st.integers(2, 4))
    return [draw(st.lists(ops(earlier), min_size=1, max_size=12)) for _ in range(count)]


def _tar(layer: list[Op]) -> bytes:
    out = Layer()
    for op in layer:
        uid, gid = op.owner
        if op.kind == "file":
            out.file(op.path, op.data, op.mode, uid, gid, op.mtime)
        elif op.kind == "dir":
            out.dir(op.path, op.mode, uid, gid, op.mtime)
        elif op.kind == "symlink":
            out.symlink(op.path, op.target, uid, gid, op.mtime)
        elif op.kind == "hardlink":
            out.hardlink(op.path, op.target, op.mtime)
        elif op.kind == "whiteout":
            out.whiteout(op.path)
        else:
            out.opaque(op.path)
    return out.tar()


def _describe(stack: list[list[Op]]) -> str:
    lines = []
    for i, layer in enumerate(stack):
        lines.append(f"layer {i + 1}:")
        lines.extend(f"    {op}" for op in layer)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Comparison


def _expected(model: Model) -> tuple[dict[str, dict[str, object]], set[frozenset[str]]]:
    tree: dict[str, dict[str, object]] = {}
    groups: dict[int, set[str]] = {}
    for path, node in model.tree.items():
        if not path:
            continue  # the root's own metadata is not the layers' to decide
        if isinstance(node, Dir):
            tree[path] = {"type": "dir", "mode": node.mode, "owner": node.owner}
            tree[path]["mtime"] = node.mtime
            continue
        groups.setdefault(id(node), set()).add(path)
        attrs: dict[str, object] = {"type": node.kind, "owner": node.owner, "mtime": node.mtime}
        if node.kind == "file":
            attrs.update(mode=node.mode, data=node.data)
        else:
            attrs["target"] = node.data
        tree[path] = attrs
    return tree, {frozenset(g) for g in groups.values() if len(g) > 1}


def _observed(root: str) -> tuple[dict[str, dict[str, object]], set[frozenset[str]]]:
    tree: dict[str, dict[str, object]] = {}
    groups: dict[tuple[int, int], set[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st_ = os.lstat(full)
            attrs: dict[str, object] = {
                "owner": (st_.st_uid, st_.st_gid),
                "mtime": st_.st_mtime_ns // NS if st_.st_mtime_ns % NS == 0 else st_.st_mtime_ns,
            }
            if stat.S_ISDIR(st_.st_mode):
                attrs.update(type="dir", mode=stat.S_IMODE(st_.st_mode))
            elif stat.S_ISREG(st_.st_mode):
                with open(full, "rb") as f:
                    attrs.update(type="file", mode=stat.S_IMODE(st_.st_mode), data=f.read())
            elif stat.S_ISLNK(st_.st_mode):
                attrs.update(type="symlink", target=os.readlink(full))
            else:
                attrs.update(type=f"other {stat.S_IFMT(st_.st_mode):o}")
            if not stat.S_ISDIR(st_.st_mode):
                groups.setdefault((st_.st_dev, st_.st_ino), set()).add(rel)
            tree[rel] = attrs
    return tree, {frozenset(g) for g in groups.values() if len(g) > 1}


def _differences(
    want: dict[str, dict[str, object]], got: dict[str, dict[str, object]]
) -> list[str]:
    out = []
    for path in sorted(set(want) | set(got)):
        if path not in got:
            out.append(f"{path}: missing, want {want[path]}")
            continue
        if path not in want:
            out.append(f"{path}: unexpected {got[path]}")
            continue
        for key, value in want[path].items():
            if value is None or (key == "owner" and not IS_ROOT):
                continue  # undecided by the rules, or not restorable without root
            if got[path].get(key) != value:
                out.append(f"{path}: {key} is {got[path].get(key)!r}, want {value!r}")
    return out


# --------------------------------------------------------------------------------------------
# The property


def _f(path: str, data: bytes = b"", mode: int = 0o644) -> Op:
    return Op("file", path, data=data, mode=mode)


def _d(path: str, mode: int = 0o755) -> Op:
    return Op("dir", path, mode=mode)


def _l(path: str, target: str) -> Op:
    return Op("hardlink", path, target=target)


@settings(max_examples=1000, deadline=None, derandomize=False)
@given(raw=stacks(), jobs=st.sampled_from([1, 2]))
# Fixed cases the generator reaches only rarely:
# two names of lower files linked to each other in one layer;
@example(jobs=2, raw=[[_f("a", b"A"), _f("b", b"B")], [_l("a", "b"), _l("b", "a")]])
# a link listed before its target, whose lower version is stale;
@example(jobs=2, raw=[[_f("c", b"old")], [_l("a/b", "c"), _f("c", b"new")]])
# a chain of links, all before the target;
@example(jobs=2, raw=[[_d("a")], [_l("b", "a/c"), _l("c", "b"), _f("a/c", b"x")]])
# an opaque marker after its siblings, and a whiteout after a same-layer recreation;
@example(
    jobs=2,
    raw=[
        [_d("a", 0o700), _f("a/b", b"1"), _f("a/c", b"2"), _f("b/c", b"3")],
        [_f("a/b", b"new"), Op("opaque", "a"), _f("b", b"f"), Op("whiteout", "b")],
    ],
)
# kaniko #282: the upper layer replaces a hardlinked name by a symlink to the other name.
@example(
    jobs=2,
    raw=[
        [_f("a/b", b"git"), _l("c/c/c", "a/b")],
        [Op("whiteout", "a/b"), Op("symlink", "a/b", target="/c/c/c")],
    ],
)
def test_random_stacks_match_the_model(raw: list[list[Op]], jobs: int) -> None:
    """Any generated stack gives the tree (or the refusal) the model of the OCI rules
    predicts, written from one process or with the file-creating helper."""
    stack = sanitize(raw)
    options = ApplyOptions(jobs=jobs)
    note("stack as applied (after dropping ambiguous entries):\n" + _describe(stack))
    model = Model()
    refusal: ModelError | None = None
    try:
        for layer in stack:
            model.apply(layer)
    except ModelError as e:
        refusal = e
    with tempfile.TemporaryDirectory(prefix="extractor-model-", dir="/dev/shm") as base:
        dest = os.path.join(base, "rootfs")
        streams = [io.BytesIO(_tar(layer)) for layer in stack]
        if refusal is not None:
            note(f"model refuses: {refusal}")
            try:
                apply_layers(dest, streams, options)
            except ExtractorError:
                pass
            else:
                raise AssertionError(f"the engine applied a stack the rules refuse ({refusal})")
        else:
            apply_layers(dest, streams, options)
            want_tree, want_groups = _expected(model)
            got_tree, got_groups = _observed(dest)
            problems = _differences(want_tree, got_tree)
            if want_groups != got_groups:
                problems.append(f"hardlink groups are {got_groups}, want {want_groups}")
            assert not problems, "tree differs from the model:\n" + "\n".join(problems)
        assert os.listdir(base) == ["rootfs"], "something was written beside the root"
