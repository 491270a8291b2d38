"""The helper process that creates files (``writebehind``): same trees, same errors, confined.

Most of the suite already runs with the helper (the default on a machine with
two CPUs); these tests pin down what it adds: the main process's work and the
helper's must interleave as if one process did both, a failure in the helper
names its own entry, it can write nowhere but below the root, and it never
outlives an apply.
"""

from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from builders import MTIME, Layer
from conftest import interpreted_only, snapshot

from extractor import ApplyOptions, apply_layers, corpus
from extractor.apply import LayerApplier, LayerInput, open_root
from extractor.corpus import layer_tars, load_cases, write_canary
from extractor.errors import BadInputError, ExtractorError, FailedWriteError, OperationalError
from extractor.model import LayerReport
from extractor.writebehind import LAG, LARGE, SEND_MAX, WriteBehind

ONE, TWO = ApplyOptions(jobs=1), ApplyOptions(jobs=2)
ENTRY_MTIMES = {int(MTIME * 10**9), corpus.MTIME * 10**9}  # what the layers here set


def _both(tmp: Path, layers: list[bytes]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The trees one process and two make of ``layers`` (the root's own times aside)."""
    trees = []
    for options in (ONE, TWO):
        dest = tmp / f"jobs{options.jobs}"
        apply_layers(dest, [io.BytesIO(layer) for layer in layers], options)
        tree = snapshot(dest)
        tree.pop(".")
        for path, (mode, uid, gid, mtime, *rest) in tree.items():
            if stat.S_ISDIR(mode) and mtime not in ENTRY_MTIMES:
                tree[path] = (mode, uid, gid, "made implicitly: now", *rest)
        trees.append(tree)
    return trees[0], trees[1]


# Stacks where what the helper still has to do decides what the main process finds.
ORDER_CASES = {
    "file-then-dir": [Layer().file("p", b"f").dir("p").file("p/x", b"in")],
    "file-then-symlink": [Layer().file("p", b"f").symlink("p", "q")],
    "file-then-child": [Layer().file("p", b"f").file("p/x", b"child")],
    "file-then-link": [Layer().file("a", b"A").hardlink("b", "a")],
    "link-before-target": [Layer().file("a", b"old"), Layer().hardlink("b", "a").file("a", b"new")],
    "file-then-large-file": [Layer().file("p", b"small").file("p", b"L" * (LARGE + 1))],
    "large-then-small": [Layer().file("p", b"L" * (LARGE + 1)).file("p", b"small")],
    "unsent-then-small": [Layer().file("p", b"M" * (SEND_MAX + 1)).file("p", b"small")],
    "small-then-unsent": [Layer().file("p", b"small").file("p", b"M" * (SEND_MAX + 1))],
    "small-then-unsent-child": [Layer().file("p", b"f").dir("p").file("p/x", b"M" * (200 << 10))],
    "dir-becomes-file": [Layer().dir("p").file("p/x", b"1"), Layer().file("p", b"now a file")],
    "symlink-becomes-file": [Layer().dir("d").symlink("p", "d"), Layer().file("p", b"file")],
    "whiteout-next-layer": [Layer().file("d/a", b"1").file("d/b", b"2"), Layer().whiteout("d/a")],
    "opaque-next-layer": [Layer().file("d/a", b"1"), Layer().opaque("d").file("d/c", b"3")],
    "same-layer-whiteout-spares": [Layer().file("a", b"1"), Layer().file("b", b"2").whiteout("a")],
    "setgid-dir-after-files": [
        Layer().dir("d").file("d/a", b"1", uid=7, gid=8).dir("d", mode=0o2755).file("d/b", b"2")
    ],
    "file-through-symlinked-parent": [
        Layer().dir("real").symlink("via", "real").file("via/a", b"1").file("real/a", b"2")
    ],
    "dir-then-file-same-layer": [Layer().dir("d").file("d/a", b"1").file("d", b"f")],
    "symlink-then-file-same-layer": [Layer().symlink("p", "q").file("p", b"f")],
    "rewritten-twice": [Layer().file("a", b"1").file("a", b"22").file("a", b"333")],
}


@pytest.mark.parametrize("layers", list(ORDER_CASES.values()), ids=list(ORDER_CASES))
def test_same_tree_as_one_process(tmp_path: Path, layers: list[Layer]) -> None:
    one, two = _both(tmp_path, [layer.tar() for layer in layers])
    assert two == one


@interpreted_only
def test_only_files_up_to_send_max_go_to_the_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bigger files are written by the main process, and the tree is the same."""
    sizes: list[int] = []
    real = WriteBehind.send

    def send(self: WriteBehind, *args: Any) -> None:
        sizes.append(args[8])
        real(self, *args)

    monkeypatch.setattr(WriteBehind, "send", send)
    layer = Layer().file("a", b"a" * SEND_MAX).file("b", b"b" * (SEND_MAX + 1)).file("c", b"c")
    apply_layers(tmp_path / "r", [io.BytesIO(layer.tar())], TWO)
    assert sizes == [SEND_MAX, 1]
    assert (tmp_path / "r" / "b").read_bytes() == b"b" * (SEND_MAX + 1)


def _children() -> list[int]:
    kids: list[int] = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as f:
            kids += [int(pid) for pid in f.read().split()]
    return kids


def test_the_main_process_takes_over_while_the_helper_lags(tmp_path: Path) -> None:
    """With the helper held stopped, the main process makes small files itself once
    ``LAG`` are outstanding, among them names the helper was sent earlier and has
    not made yet: the tree is still the one a single process makes."""
    layer = Layer()
    for d in range(7):
        layer.dir(f"d{d}")
    names = LAG + 100
    for i in range(2 * names):  # the second version of a name while the first may be pending
        layer.file(f"d{i % names % 7}/f{i % names}", f"version {i}".encode())
    tar = layer.tar()
    one = tmp_path / "one"
    apply_layers(one, [io.BytesIO(tar)], ONE)
    root = open_root(str(tmp_path / "two"), TWO, lambda *_: None)
    held: list[int] = []

    def hold_the_helper() -> None:
        deadline = time.monotonic() + 10
        while not held and time.monotonic() < deadline:
            held.extend(_children())
        for pid in held:
            os.kill(pid, signal.SIGSTOP)
        time.sleep(0.5)
        for pid in held:
            os.kill(pid, signal.SIGCONT)

    holder = threading.Thread(target=hold_the_helper)
    try:
        root.start_helper()
        holder.start()
        while not held and holder.is_alive():
            time.sleep(0.001)
        applier = LayerApplier(root, LayerReport(0, "lagging"), "1/1", None)
        applier.run(LayerInput(io.BytesIO(tar)), verify=True, jobs=2)
        root.finish()
        behind = root._behind
        assert behind is not None and held
        sent = behind._sent
    finally:
        holder.join()
        root.close()
    assert 0 < sent < 2 * names, "the main process made none of the files itself"
    trees = [snapshot(one), snapshot(tmp_path / "two")]
    for tree in trees:
        tree.pop(".")
    assert trees[0] == trees[1]


@interpreted_only
def test_nothing_is_removed_while_the_helper_has_files_to_make(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rule the order rests on: every removal waits for the files already sent."""
    helpers: list[WriteBehind] = []
    real_init, main = WriteBehind.__init__, os.getpid()

    def init(self: WriteBehind, root_fd: int) -> None:
        real_init(self, root_fd)
        helpers.append(self)

    def checked(real: Any) -> Any:
        def remove(*args: Any, **kwargs: Any) -> Any:
            if os.getpid() == main:  # the helper replaces regular files itself
                assert all(h._sent == h._settled for h in helpers), f"{real.__name__}{args}"
            return real(*args, **kwargs)

        return remove

    monkeypatch.setattr(WriteBehind, "__init__", init)
    monkeypatch.setattr(os, "unlink", checked(os.unlink))
    monkeypatch.setattr(os, "rmdir", checked(os.rmdir))
    lower = Layer().file("x", b"lower").dir("d").file("d/y", b"lower").symlink("s", "d")
    upper = (
        Layer()
        .file("a", b"sent")
        .symlink("x", "a")  # replaces a lower regular file
        .file("b", b"sent")
        .dir("d", mode=0o2755)  # setgid: no longer a plain parent
        .file("c", b"sent")
        .file("s", b"replaces a symlink")
        .file("e", b"sent")
        .whiteout("d/y")
        .file("f", b"sent")
        .opaque("d")
    )
    for case, layers in [("mixed", [lower, upper]), *ORDER_CASES.items()]:
        apply_layers(tmp_path / case, [io.BytesIO(layer.tar()) for layer in layers], TWO)
    assert len(helpers) == len(ORDER_CASES) + 1


def test_corpus_trees_are_the_same_with_the_helper(tmp_path: Path) -> None:
    """Every conformance case that one process applies gives the same tree with two."""
    outside = tmp_path / "outside"
    write_canary(str(outside))
    compared = 0
    for number, case in enumerate(load_cases()):
        if case.error is not None:
            continue
        base = tmp_path / str(number)
        base.mkdir()
        one, two = _both(base, layer_tars(case, str(outside)))
        assert two == one, case.name
        compared += 1
    assert compared == sum(1 for case in load_cases() if case.error is None)


def test_many_small_files_in_many_directories(shm_dir: Path) -> None:
    """Enough files to fill the pipe many times over, across the helper's fd cache."""
    layer = Layer()
    for d in range(300):
        layer.dir(f"d{d}")
        for f in range(20):
            layer.file(f"d{d}/f{f}", bytes([f]) * (f * 300), mode=0o600 + f % 8)
    one, two = _both(shm_dir, [layer.tar()])
    assert two == one
    assert len(two) == 300 * 21


def test_failure_in_the_helper_names_its_entry(tmp_path: Path) -> None:
    """A name the file system refuses fails in the helper; the error names that entry."""
    long_name = "n" * 300  # over NAME_MAX
    layer = Layer().file("first", b"1").file(long_name, b"x").dir("later")
    with pytest.raises(BadInputError) as info:
        apply_layers(tmp_path / "r", [io.BytesIO(layer.tar())], TWO)
    assert info.value.entry == long_name
    assert (tmp_path / "r" / "first").read_bytes() == b"1"


def test_earlier_failure_in_the_helper_wins(tmp_path: Path) -> None:
    """The helper's failure came first in the layer, so it is the one reported, even
    when the main process fails at a later entry before hearing of it."""
    layer = Layer().file("n" * 300, b"x").hardlink("link", "missing")
    with pytest.raises(BadInputError) as info:
        apply_layers(tmp_path / "r", [io.BytesIO(layer.tar())], TWO)
    assert info.value.entry == "n" * 300


def test_truncated_file_stops_the_helper_cleanly(tmp_path: Path) -> None:
    """A layer cut off inside a file after one sent to the helper: the truncation is
    reported, not a hang, and the file sent before it is made."""
    data = Layer().file("a", b"1").file("big", os.urandom(300 << 10)).tar()
    cut = data[: 200 << 10]
    with pytest.raises(BadInputError, match="truncated"):
        apply_layers(tmp_path / "r", [io.BytesIO(cut)], TWO)
    assert (tmp_path / "r" / "a").read_bytes() == b"1"


def test_a_helper_that_died_is_an_operational_error(tmp_path: Path) -> None:
    """A helper killed from outside (say, by the OOM killer) fails the apply in one line."""
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    behind = WriteBehind(fd)
    try:
        os.kill(behind._pid, signal.SIGKILL)
        with pytest.raises(OperationalError, match="helper process exited"):
            for n in range(100):  # until the pipe says so
                behind.send("", f"f{n}", f"f{n}", f"f{n}", 0, 0o644, (0, 0), (0, 0), 0, _no_data)
                behind.settle()
    finally:
        behind.close()
        os.close(fd)


def _no_data(n: int) -> bytes:
    raise AssertionError("an empty file reads nothing")


# -- confinement: the helper alone ---------------------------------------------------------


def _refused(dest: Path, parent: str, name: str, match: str | None = None) -> None:
    """Send the helper of a root at ``dest`` a file ``name`` in ``parent``; it must fail."""
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    behind = WriteBehind(fd)
    try:
        data = io.BytesIO(b"bad")
        behind.send(parent, name, name, name, 0, 0o644, (0, 0), (0, 0), 3, data.read)
        with pytest.raises(FailedWriteError, match=match):
            behind.settle()
    finally:
        behind.close()
        os.close(fd)


@pytest.mark.parametrize("parent", ["..", "a/../..", "./a", "a//b", "/abs"])
def test_helper_refuses_paths_that_are_not_physical(canary: Any, parent: str) -> None:
    canary.dest.mkdir()
    (canary.dest / "a").mkdir()
    _refused(canary.dest, parent, "passwd")


@pytest.mark.parametrize("parent", ["etc", "d/up", "etc/dir"])
def test_helper_does_not_follow_a_symlinked_parent(canary: Any, parent: str) -> None:
    """Sent a parent that is a symlink out of the root, the helper refuses it."""
    canary.dest.mkdir()
    (canary.dest / "etc").symlink_to(canary.outside)
    (canary.dest / "d").mkdir()
    (canary.dest / "d" / "up").symlink_to("../etc")
    _refused(canary.dest, parent, "victim")


def test_helper_replaces_only_regular_files(canary: Any) -> None:
    """A name holding a symlink (to a host file) is never written through or replaced."""
    canary.dest.mkdir()
    (canary.dest / "victim").symlink_to(canary.outside / "victim")
    _refused(canary.dest, "", "victim", match="not a regular file")
    assert (canary.dest / "victim").is_symlink()


# -- the helper's lifetime -------------------------------------------------------------


def _holders(path: Path) -> list[int]:
    """Processes with an fd on ``path`` or below it."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target == str(path) or target.startswith(f"{path}/"):
                pids.append(int(pid))
                break
    return pids


def test_no_helper_is_left_after_an_apply(tmp_path: Path) -> None:
    dest = tmp_path / "r"
    apply_layers(dest, [io.BytesIO(Layer().file("a", b"1").tar())], TWO)
    assert _holders(dest) == []
    with pytest.raises(ExtractorError):
        apply_layers(dest, [io.BytesIO(Layer().file("b", b"2").hardlink("c", "nope").tar())], TWO)
    assert _holders(dest) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_no_helper_is_left_after_a_signal(shm_dir: Path, sig: int) -> None:
    """Interrupted mid-layer, the command exits and its helper is gone with it."""
    layer = Layer()
    for d in range(100):
        for f in range(200):
            layer.file(f"d{d}/f{f}", b"x" * 100)
    path = layer.write(shm_dir / "layer.tar")
    dest = shm_dir / "r"
    proc = subprocess.Popen(
        [sys.executable, "-m", "extractor", "apply", "-q", "--jobs", "2", str(dest), str(path)],
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while not (dest / "d1").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode in (128 + sig, 130), err
    assert _holders(dest) == []
