"""The adversarial corpus (testdata/adversarial/) and resource bombs, applied in a jail.

Every case runs ``apply_layers`` in a forked child that is chrooted into a
fake host: ``<tmp>/{etc,root,usr,outside,tmp}`` with files a hostile layer
would love to reach, ``<tmp>/proc`` (a private procfs mount, which the engine
needs for ``/proc/self/fd``) and DEST at ``<tmp>/rootfs``. So the corpus can
aim at the real published targets (``/etc/passwd``, ``../../etc/cron.d``)
and a broken engine damages only the fake host, which the test then finds
changed. Each case asserts both outcomes:

- nothing outside DEST changed: every fake host file's type, mode, owner,
  mtime, ctime, link count and content, and the listing of ``<tmp>/..``;
- the result is the tree ``cases.json`` names, or a clean ``ExtractorError``
  of the named class, never another exception;

within bounded time (the child is killed at ``TIMEOUT`` seconds: a hang) and
bounded memory: the child's peak RSS growth during the apply (``VmHWM`` after
resetting it through ``/proc/self/clear_refs``, minus ``VmRSS`` before) must
stay under ``MEMORY_BOUND``. The bombs (1 GiB gzip and zstd, 200k hardlinks,
10k-deep paths, a 1 TiB sparse file) have tighter time bounds of their own.

The jail needs root (chroot, a mount namespace); CI runs as root.
"""

from __future__ import annotations

import ctypes
import io
import json
import os
import select
import signal
import stat
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from extractor import ApplyOptions, ExtractorError, Limits, apply_layers
from extractor.paxwriter import pax_record

CORPUS = Path(__file__).resolve().parent.parent / "testdata" / "adversarial"
CASES: list[dict[str, Any]] = json.loads((CORPUS / "cases.json").read_text())["cases"]
TIMEOUT = 30.0  # seconds before a child counts as hung
MEMORY_BOUND = 64 << 20  # bytes of peak RSS growth allowed for any one apply
BOMB_SECONDS = 20.0  # a 1 GiB bomb must be written within this
MTIME = 1_600_000_000

FAKE_HOST = {
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n",
    "etc/shadow": b"root:*:19000:0:99999:7:::\n",
    "etc/cron.d/job": b"* * * * * root true\n",
    "root/.ssh/authorized_keys": b"ssh-ed25519 AAAA host\n",
    "outside/victim": b"host file\n",
    "usr/bin/sh": b"#!host\n",
}

OPTIONS = [
    pytest.param(ApplyOptions(), id="privileged"),
    pytest.param(ApplyOptions(rootless=True), id="rootless"),
]

pytestmark = pytest.mark.root

# -- the jail ---------------------------------------------------------------------------

_CLONE_NEWNS = 0x00020000
_MS_REC = 16384
_MS_PRIVATE = 1 << 18


def _libc_call(name: str, *args: Any) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


@dataclass
class Outcome:
    """What the jailed apply did."""

    status: str  # ok, error (an ExtractorError), crash (anything else), hang
    error: str = ""  # class name of the error
    classes: tuple[str, ...] = ()  # its MRO's class names
    message: str = ""
    trace: str = ""
    seconds: float = 0.0
    growth: int = 0  # bytes of peak RSS growth during the apply
    maxrss: int = 0  # ru_maxrss of the child, bytes


def make_host(base: Path) -> None:
    """Plant the fake host around ``base/rootfs``."""
    for rel, data in FAKE_HOST.items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (base / "tmp").mkdir()
    (base / "proc").mkdir()
    os.chmod(base / "etc" / "shadow", 0o640)
    os.chmod(base / "tmp", 0o1777)


def host_state(base: Path) -> dict[str, tuple[object, ...]]:
    """Everything observable about the fake host (DEST and procfs excluded)."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        if dirpath == str(base):
            dirnames[:] = [d for d in dirnames if d not in ("rootfs", "proc")]
        for name in [".", *dirnames, *filenames]:
            path = os.path.normpath(os.path.join(dirpath, name))
            st = os.lstat(path)
            extra: object = None
            if stat.S_ISREG(st.st_mode):
                extra = Path(path).read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(path)
            out[os.path.relpath(path, base)] = (
                st.st_mode,
                st.st_uid,
                st.st_gid,
                st.st_mtime_ns if path != str(base) else 0,  # DEST is made in it
                st.st_ctime_ns if path != str(base) else 0,
                st.st_nlink if path != str(base) else 0,
                extra,
            )
    top = sorted(set(os.listdir(base)) - {"rootfs"})
    out["<listing>"] = (top, sorted(os.listdir(base.parent)))
    return out


Source = Callable[[], Any]  # opens a binary stream


def _child(base: Path, sources: list[Source], options: ApplyOptions, wfd: int) -> None:
    out: dict[str, Any]
    try:
        streams = [make() for make in sources]  # opened before the chroot
        _libc_call("unshare", _CLONE_NEWNS)
        _libc_call("mount", None, b"/", None, _MS_REC | _MS_PRIVATE, None)
        _libc_call("mount", b"proc", os.fsencode(base / "proc"), b"proc", 0, None)
        os.chroot(base)
        os.chdir("/")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS to the current RSS
        rss0 = _status_kib("VmRSS")
        started = time.monotonic()
        try:
            apply_layers("/rootfs", streams, options)
            out = {"status": "ok"}
        except ExtractorError as e:
            out = {
                "status": "error",
                "error": type(e).__name__,
                "classes": [c.__name__ for c in type(e).__mro__],
                "message": str(e),
            }
        except BaseException as e:
            out = {"status": "crash", "error": type(e).__name__, "message": repr(e)}
            out["trace"] = traceback.format_exc()
        out["seconds"] = time.monotonic() - started
        out["growth"] = (_status_kib("VmHWM") - rss0) * 1024
    except BaseException as e:
        out = {"status": "crash", "error": "jail", "message": repr(e)}
        out["trace"] = traceback.format_exc()
    os.write(wfd, json.dumps(out).encode())


def jailed_apply(
    base: Path, sources: list[Source], options: ApplyOptions, timeout: float = TIMEOUT
) -> Outcome:
    """Apply in a forked child chrooted into ``base`` (DEST is ``/rootfs`` there)."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            os.close(rfd)
            _child(base, sources, options, wfd)
        finally:
            os._exit(0)
    os.close(wfd)
    data = b""
    deadline = time.monotonic() + timeout
    hung = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                hung = True
                os.kill(pid, signal.SIGKILL)
                break
            ready, _, _ = select.select([rfd], [], [], left)
            if ready:
                chunk = os.read(rfd, 1 << 16)
                if not chunk:
                    break
                data += chunk
    finally:
        os.close(rfd)
        _, _, usage = os.wait4(pid, 0)
    if hung:
        return Outcome("hang", seconds=timeout)
    if not data:
        return Outcome("crash", message="the child died without a word")
    got = json.loads(data)
    got["classes"] = tuple(got.get("classes", ()))
    return Outcome(**got, maxrss=usage.ru_maxrss * 1024)


@pytest.fixture
def jail(tmp_path: Path) -> Iterator[Path]:
    """A fake host in ``tmp_path``; fails the test if anything outside DEST changed."""
    make_host(tmp_path)
    before = host_state(tmp_path)
    yield tmp_path
    try:
        assert host_state(tmp_path) == before, "FAKE HOST CHANGED: THIS IS A PATH ESCAPE"
    finally:
        # shutil.rmtree recurses once per level and gives up on the deep trees; rm does not.
        subprocess.run(["rm", "-rf", "--one-file-system", str(tmp_path / "rootfs")], check=False)


def check_outcome(outcome: Outcome, expect: dict[str, Any], memory: int = MEMORY_BOUND) -> None:
    """An outcome is a success or the named clean error; nothing else is acceptable."""
    assert outcome.status != "hang", f"no answer within {TIMEOUT} s"
    assert outcome.status != "crash", f"not an ExtractorError: {outcome.message}\n{outcome.trace}"
    assert outcome.growth <= memory, f"peak RSS grew by {outcome.growth >> 20} MiB"
    if expect["outcome"] == "error":
        assert outcome.status == "error", "the apply succeeded; it should have been refused"
        assert expect["error"] in outcome.classes, f"{outcome.error}: {outcome.message}"
        assert "\n" not in outcome.message
        for word in expect["words"]:
            assert word in outcome.message, outcome.message
    else:
        assert outcome.status == "ok", f"{outcome.error}: {outcome.message}"


def check_tree(dest: Path, tree: dict[str, Any]) -> None:
    """DEST holds what ``tree`` says (see testdata/make_adversarial.py)."""
    for rel, want in tree.items():
        path = dest / rel
        if want is None:
            assert not os.path.lexists(path), f"{rel} should not exist"
            continue
        st = os.lstat(path)
        kind = want[0]
        if kind == "file":
            assert stat.S_ISREG(st.st_mode), rel
            assert path.read_bytes() == want[1].encode(), rel
        elif kind == "symlink":
            assert stat.S_ISLNK(st.st_mode), rel
            assert os.readlink(path) == want[1], rel
        elif kind == "dir":
            assert stat.S_ISDIR(st.st_mode), rel
        elif kind == "sparse":
            assert stat.S_ISREG(st.st_mode), rel
            assert st.st_size == want[1], rel
            assert st.st_blocks * 512 <= 1 << 20, f"{rel} is not sparse: {st.st_blocks} blocks"
            with open(path, "rb") as f:
                assert os.pread(f.fileno(), 5, want[1] - 5) == b"EVIL\n"
                assert os.pread(f.fileno(), 4096, 0) == bytes(4096)
        elif kind == "zeros":
            assert stat.S_ISREG(st.st_mode), rel
            assert st.st_size == want[1], rel
            with open(path, "rb") as f:
                for offset in (0, want[1] // 2, want[1] - 4096):
                    assert os.pread(f.fileno(), 4096, offset) == bytes(4096)
        else:
            raise AssertionError(f"unknown kind {kind}")


def _opener(path: Path) -> Source:
    return lambda: open(path, "rb")  # closed when the child exits


# -- the corpus --------------------------------------------------------------------------

BOMBS = {"gzip-bomb-1gib", "zstd-bomb-1gib"}


def _corpus_params() -> list[Any]:
    params = []
    for case in CASES:
        for option in OPTIONS:
            if case["id"] in BOMBS and option.id == "rootless":
                continue  # the same streaming path; once is enough for 1 GiB
            params.append(pytest.param(case, option.values[0], id=f"{case['id']}-{option.id}"))
    return params


@pytest.mark.parametrize(("case", "options"), _corpus_params())
def test_corpus_case(jail: Path, case: dict[str, Any], options: ApplyOptions) -> None:
    """Each corpus case: nothing outside DEST changes, and the expected tree or clean error."""
    sources = [_opener(CORPUS / layer) for layer in case["layers"]]
    outcome = jailed_apply(jail, sources, options)
    check_outcome(outcome, case["expect"])
    if outcome.status == "ok":
        check_tree(jail / "rootfs", case["expect"]["tree"])
    if case["id"] in BOMBS:
        assert outcome.seconds < BOMB_SECONDS
        print(
            f"{case['id']}: {outcome.seconds:.1f} s, peak RSS growth "
            f"{outcome.growth / 2**20:.1f} MiB, child max RSS {outcome.maxrss / 2**20:.0f} MiB"
        )


def test_corpus_is_up_to_date() -> None:
    """cases.json lists exactly the layer files in testdata/adversarial/."""
    listed = {layer for case in CASES for layer in case["layers"]}
    present = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.parent != CORPUS}
    present -= {str(p.relative_to(CORPUS)) for p in CORPUS.iterdir() if p.is_dir()}
    assert listed == present
    assert len(CASES) >= 40


# -- bombs generated on the fly -----------------------------------------------------------


def _checksum(block: bytearray) -> None:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)


def _ustar(name: bytes, typeflag: bytes, size: int = 0, linkname: bytes = b"") -> bytearray:
    block = bytearray(512)
    block[0 : len(name)] = name
    block[100:108] = b"0000644\0"
    block[108:116] = b"0000000\0"
    block[116:124] = b"0000000\0"
    block[124:136] = b"%011o\0" % size
    block[136:148] = b"%011o\0" % MTIME
    block[156:157] = typeflag
    block[157 : 157 + len(linkname)] = linkname
    block[257:265] = b"ustar\x0000"
    _checksum(block)
    return block


class GeneratedTar:
    """A tar produced block by block as it is read (never whole in memory)."""

    def __init__(self, blocks: Iterator[bytes]):
        self._blocks = blocks
        self._buf = bytearray()

    def read(self, n: int = -1, /) -> bytes:
        want = 1 << 20 if n < 0 else n
        while len(self._buf) < want:
            block = next(self._blocks, None)
            if block is None:
                break
            self._buf += block
        out = bytes(self._buf[:want])
        del self._buf[:want]
        return out


HARDLINKS = 200_000
PER_ENTRY = 512  # bytes of bookkeeping allowed per entry of a layer (names, link maps)


def _hardlink_blocks() -> Iterator[bytes]:
    yield bytes(_ustar(b"target", b"0", 5)) + b"EVIL\n" + bytes(507)
    yield bytes(_ustar(b"h", b"5"))
    template = _ustar(b"h/000000", b"1", linkname=b"target")
    for i in range(HARDLINKS):
        block = bytearray(template)
        block[2:8] = b"%06d" % i
        _checksum(block)
        yield bytes(block)
    yield bytes(1024)


@pytest.mark.parametrize("options", OPTIONS)
def test_200k_hardlinks_to_one_file(jail: Path, options: ApplyOptions) -> None:
    """200 000 hardlinks to one file: all made, one inode, in 60 s, 32 MiB + 512 B a link."""
    sources: list[Source] = [lambda: GeneratedTar(_hardlink_blocks())]
    outcome = jailed_apply(jail, sources, options, timeout=120)
    check_outcome(outcome, {"outcome": "ok"}, memory=(32 << 20) + PER_ENTRY * HARDLINKS)
    dest = jail / "rootfs"
    st = os.stat(dest / "target")
    assert st.st_nlink == HARDLINKS + 1
    for i in (0, HARDLINKS // 2, HARDLINKS - 1):
        assert os.stat(dest / "h" / f"{i:06d}").st_ino == st.st_ino
    assert len(os.listdir(dest / "h")) == HARDLINKS
    assert outcome.seconds < 60
    print(
        f"{HARDLINKS} hardlinks: {outcome.seconds:.1f} s, "
        f"peak RSS growth {outcome.growth / 2**20:.1f} MiB"
    )


LINK_LIMIT = 50_000  # a configured --max-hardlinks, so the refusals come quickly


def _endless_links() -> Iterator[bytes]:
    """A target, then hardlinks to it without end (a layer that would never finish)."""
    yield bytes(_ustar(b"target", b"0", 5)) + b"EVIL\n" + bytes(507)
    yield bytes(_ustar(b"h", b"5"))
    i = 0
    while True:
        block = _ustar(b"h/%07d" % i, b"1", linkname=b"target")
        yield bytes(block)
        i += 1


def _endless_rewrites() -> Iterator[bytes]:
    """1000 links to a file, then the file written again and again: each rewrite
    remakes all 1000 links, so unbounded this is quadratic work."""
    yield bytes(_ustar(b"target", b"0", 5)) + b"EVIL\n" + bytes(507)
    yield bytes(_ustar(b"h", b"5"))
    for i in range(1000):
        yield bytes(_ustar(b"h/%04d" % i, b"1", linkname=b"target"))
    while True:
        yield bytes(_ustar(b"target", b"0", 5)) + b"EVIL\n" + bytes(507)


@pytest.mark.parametrize("blocks", [_endless_links, _endless_rewrites])
def test_hardlink_bombs_are_refused_at_the_limit(
    jail: Path, blocks: Callable[[], Iterator[bytes]]
) -> None:
    """Millions of links (or of remade links) stop at ``--max-hardlinks`` with a clean
    error, in bounded memory, and the fake host is untouched."""
    options = ApplyOptions(limits=Limits(hardlinks=LINK_LIMIT))
    outcome = jailed_apply(jail, [lambda: GeneratedTar(blocks())], options, timeout=120)
    expect = {"outcome": "error", "error": "BadInputError", "words": ("--max-hardlinks",)}
    check_outcome(outcome, expect, memory=(32 << 20) + PER_ENTRY * LINK_LIMIT)
    print(
        f"{blocks.__name__}: refused after {LINK_LIMIT} links in {outcome.seconds:.1f} s, "
        f"peak RSS growth {outcome.growth / 2**20:.1f} MiB"
    )


DEPTH = 10_000


def _pax(records: bytes) -> bytes:
    head = _ustar(b"PaxHeaders/deep", b"x", len(records))
    return bytes(head) + records + bytes(-len(records) % 512)


def _deep_layer(depth: int = DEPTH, component: str = "d") -> bytes:
    name = "/".join([component] * depth) + "/leaf"
    head = _ustar(b"deep-leaf", b"0", 5)
    return (
        _pax(pax_record(b"path", name.encode()))
        + bytes(head)
        + b"EVIL\n"
        + bytes(507)
        + bytes(1024)
    )


def _whiteout_layer() -> bytes:
    return bytes(_ustar(b".wh.d", b"0")) + bytes(1024)


def _deep_leaf(dest: Path) -> bytes:
    """Read ``d/`` DEPTH times, then ``leaf``, one directory fd at a time (no PATH_MAX limit)."""
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(DEPTH):
            nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
        leaf = os.open("leaf", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
        try:
            return os.read(leaf, 100)
        finally:
            os.close(leaf)
    finally:
        os.close(fd)


@pytest.mark.parametrize("options", OPTIONS)
def test_path_nested_10k_levels(jail: Path, options: ApplyOptions) -> None:
    """A file 10 000 directories deep is made, then a whiteout removes the whole tree."""
    dest = jail / "rootfs"
    deep = _deep_layer()
    made = jailed_apply(jail, [lambda: _bytes_io(deep)], options, timeout=60)
    check_outcome(made, {"outcome": "ok"})
    assert _deep_leaf(dest) == b"EVIL\n"
    gone = jailed_apply(jail, [lambda: _bytes_io(_whiteout_layer())], options, timeout=60)
    check_outcome(gone, {"outcome": "ok"})
    assert os.listdir(dest) == []
    print(
        f"depth {DEPTH}: made in {made.seconds:.1f} s (+{made.growth / 2**20:.1f} MiB), "
        f"removed in {gone.seconds:.1f} s (+{gone.growth / 2**20:.1f} MiB)"
    )


def _bytes_io(data: bytes) -> IO[bytes]:
    return io.BytesIO(data)


@pytest.mark.parametrize(
    ("depth", "component"),
    [(2000, "c" * 100), (30_000, "d")],
    ids=["2000x100-chars", "30000x1-char"],
)
def test_memory_is_linear_in_the_length_of_a_deep_name(
    jail: Path, depth: int, component: str
) -> None:
    """A 200 kB or 60 kB PAX path: made or cleanly refused, within the memory bound.

    What a layer wrote must be remembered in memory that grows with the
    length of the name, not with its square (the ancestors' lengths add up to
    200 MB and 900 MB here).
    """
    deep = _deep_layer(depth, component)
    outcome = jailed_apply(jail, [lambda: _bytes_io(deep)], ApplyOptions(), timeout=60)
    assert outcome.status in ("ok", "error"), f"{outcome.message}\n{outcome.trace}"
    assert "\n" not in outcome.message
    assert outcome.growth <= MEMORY_BOUND, f"peak RSS grew by {outcome.growth >> 20} MiB"
