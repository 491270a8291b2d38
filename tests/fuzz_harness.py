"""Fuzz the engine with mutated layer streams and image documents.

    python tests/fuzz_harness.py --seconds 600 [--seed N]

Mutations (bit flips, byte overwrites, truncation, splices of two streams,
tar header field edits with the checksum fixed) are applied to valid tar,
gzip and zstd layers, and to the index.json, manifest and config of a small
OCI layout. The only acceptable outcomes are success or an ``ExtractorError``
subclass; any other exception, a hang (SIGALRM after ``DEADLINE`` seconds)
or a change to the canary directory beside DEST is a failure, and its input
is saved in testdata/fuzz-crashes/ (a layer as ``layer-<sha>.bin``, an image
mutation as ``image-<sha>.json``). tests/test_fuzz.py replays every saved
input and runs the same targets under hypothesis within the CI budget.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import zstandard  # noqa: E402
from builders import Layer  # noqa: E402
from imagebuilders import OciLayout, to_json  # noqa: E402

from extractor import ApplyOptions, ExtractorError, apply_layers  # noqa: E402
from extractor.images import open_image  # noqa: E402
from extractor.unpack import unpack_image  # noqa: E402

CRASHES = HERE.parent / "testdata" / "fuzz-crashes"
DEADLINE = 5.0
OPS = ("flip", "overwrite", "truncate", "splice", "field", "insert")
# Offsets and widths of the ustar header fields worth editing.
FIELDS = [(100, 8), (108, 8), (116, 8), (124, 12), (136, 12), (156, 1), (157, 100), (345, 155)]
FIELDS += [(0, 100), (329, 8), (337, 8), (483, 12), (386, 96), (482, 1)]

Op = tuple[str, int, bytes]


class Hang(BaseException):
    """The target ran past the deadline."""


class FuzzError(AssertionError):
    """An outcome other than success or an ExtractorError."""


@contextlib.contextmanager
def deadline(seconds: float | None = None) -> Iterator[None]:
    """Raise ``Hang`` if the block runs past ``seconds`` (default ``DEADLINE``)."""
    seconds = DEADLINE if seconds is None else seconds

    def fire(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- seeds --------------------------------------------------------------------------


def seed_tars() -> list[bytes]:
    """Small valid layers covering every entry kind, long names, PAX, whiteouts, links."""
    import tarfile

    return [
        Layer()
        .dir("etc", mode=0o755)
        .file("etc/passwd", b"root:x:0:0\n", xattrs={"user.a": b"1"})
        .symlink("etc/link", "../outside/victim")
        .hardlink("etc/hard", "etc/passwd")
        .fifo("run/fifo")
        .whiteout("old")
        .opaque("var")
        .tar(),
        Layer(tarfile.GNU_FORMAT)
        .file("a/" + "n" * 150, b"long name\n")
        .symlink("l" * 120, "t" * 120)
        .file("../../outside/zz-escape", b"x")
        .tar(),
        Layer()
        .symlink("up", "../outside")
        .file("up/victim", b"evil")
        .file("big", bytes(3000))
        .tar(),
        Layer(tarfile.USTAR_FORMAT).dir("d").file("d/f", b"ustar\n").hardlink("d/h", "d/f").tar(),
    ]


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "zstd":
        return zstandard.ZstdCompressor(write_checksum=True).compress(data)
    return data


# -- mutations ------------------------------------------------------------------------


def _checksummed(data: bytearray, start: int) -> None:
    block = data[start : start + 512]
    if len(block) < 512:
        return
    block[148:156] = b" " * 8
    data[start + 148 : start + 156] = b"%06o\0 " % sum(block)


def mutate(data: bytes, ops: list[Op], other: bytes) -> bytes:
    """Apply ``ops`` (op, position, bytes) in order; positions wrap around the data."""
    buf = bytearray(data)
    for op, pos, value in ops:
        n = len(buf)
        if n == 0:
            break
        at = pos % n
        if op == "flip":
            buf[at] ^= 1 << (pos >> 32 & 7) if pos >> 32 else 1
        elif op == "overwrite":
            buf[at : at + len(value)] = value[: n - at]
        elif op == "truncate":
            del buf[at:]
        elif op == "splice":
            cut = pos % (len(other) or 1)
            buf[at:] = other[cut:]
        elif op == "insert":
            buf[at:at] = value
        elif op == "field":
            # An edit of one header field of the block ``at`` falls in, checksum made valid.
            start = at - at % 512
            off, width = FIELDS[pos % len(FIELDS)]
            raw = (value * (width // max(len(value), 1) + 1))[:width] if value else bytes(width)
            buf[start + off : start + off + width] = raw
            if start + 512 <= len(buf):
                _checksummed(buf, start)
    return bytes(buf)


def random_ops(rng: random.Random) -> list[Op]:
    ops = []
    for _ in range(rng.randint(1, 4)):
        op = rng.choice(OPS)
        pos = rng.getrandbits(40)
        value = rng.randbytes(rng.choice([1, 1, 2, 4, 8, 12]))
        if rng.random() < 0.3:
            value = rng.choice([b"\xff" * 12, b"\x80" + bytes(11), b"7" * 11 + b"\0", b"-1 ", b"0"])
        ops.append((op, pos, value))
    return ops


# -- targets --------------------------------------------------------------------------


def _canary(base: Path) -> Path:
    outside = base / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "victim").write_bytes(b"host file\n")
    (outside / "dir" / "file").write_bytes(b"host nested\n")
    return outside


def _state(top: Path) -> dict[str, tuple[Any, ...]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [".", *dirnames, *filenames]:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            data = Path(p).read_bytes() if os.path.isfile(p) and not os.path.islink(p) else None
            out[p] = (st.st_mode, st.st_mtime_ns, st.st_ctime_ns, st.st_nlink, data)
    return out


def _rmtree(path: Path) -> None:
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if not os.path.islink(full):
                with contextlib.suppress(OSError):
                    os.chmod(full, 0o755)
    shutil.rmtree(path, ignore_errors=True)


def _guarded(run: Any, base: Path) -> str:
    """Run ``run()`` under the deadline; return 'ok' or the error class; raise FuzzError."""
    outside = _canary(base)
    before = _state(outside)
    listing = sorted(os.listdir(base))
    try:
        with deadline():
            run()
        outcome = "ok"
    except ExtractorError as e:
        if "\n" in str(e):
            raise FuzzError(f"multi-line error message: {e!r}") from None
        outcome = type(e).__name__
    except Hang as e:
        raise FuzzError(str(e)) from None
    except Exception as e:
        raise FuzzError(f"{type(e).__name__}: {e}\n{traceback.format_exc()}") from None
    if _state(outside) != before:
        raise FuzzError("ESCAPE: the canary beside DEST changed")
    extra = set(os.listdir(base)) - set(listing) - {"rootfs"}
    if extra:
        raise FuzzError(f"ESCAPE: {sorted(extra)} appeared beside DEST")
    return outcome


def check_layer(data: bytes, rootless: bool = False) -> str:
    """Apply one layer blob into a fresh DEST beside a canary."""
    base = Path(tempfile.mkdtemp(prefix="fuzz-", dir="/dev/shm"))
    try:
        options = ApplyOptions(rootless=rootless)
        return _guarded(lambda: apply_layers(base / "rootfs", [io.BytesIO(data)], options), base)
    finally:
        _rmtree(base)


DOCS = ("index", "manifest", "config")


def build_image(doc: str, mutated: bytes) -> OciLayout:
    """A two-layer OCI layout whose ``doc`` JSON is replaced by ``mutated``.

    Digests that name the mutated document are updated, so the parser (not
    only the digest check) sees it.
    """
    tars = [seed_tars()[3], Layer().file("etc/hostname", b"fuzz\n").whiteout("d/f").tar()]
    layout = OciLayout()
    desc = layout.image(tars, compression=["gzip", "zstd"])
    manifest = json.loads(layout.blobs[desc["digest"]])
    if doc == "config":
        del layout.blobs[manifest["config"]["digest"]]
        manifest["config"] = layout.blob(mutated, manifest["config"]["mediaType"])
        del layout.blobs[desc["digest"]]
        desc = layout.blob(to_json(manifest), desc["mediaType"])
    elif doc == "manifest":
        del layout.blobs[desc["digest"]]
        desc = layout.blob(mutated, desc["mediaType"])
    layout.tag(desc, "latest")
    return layout


def image_doc(doc: str) -> bytes:
    """The valid JSON text of ``doc`` in the image ``build_image`` makes."""
    layout = build_image("none", b"")
    index = {"schemaVersion": 2, "manifests": layout.entries}
    if doc == "index":
        return to_json(index)
    manifest_bytes = layout.blobs[layout.entries[0]["digest"]]
    if doc == "manifest":
        return manifest_bytes
    return layout.blobs[json.loads(manifest_bytes)["config"]["digest"]]


def check_image(doc: str, mutated: bytes) -> str:
    """Open and unpack a layout whose ``doc`` is ``mutated``."""
    base = Path(tempfile.mkdtemp(prefix="fuzz-", dir="/dev/shm"))
    try:
        layout = build_image(doc, mutated)
        path = layout.write_dir(base / "image")
        if doc == "index":
            (path / "index.json").write_bytes(mutated)

        def run() -> None:
            with open_image(str(path)) as image:
                _ = image.layers
            unpack_image(str(path), str(base / "rootfs"))

        return _guarded(run, base)
    finally:
        _rmtree(base)


def mutate_json(text: bytes, ops: list[Op], rng_seed: int) -> bytes:
    """Byte mutations half the time; otherwise a structural edit of the parsed JSON."""
    if rng_seed % 2:
        return mutate(text, ops, b'{"a": [1, null, "x"]}')
    rng = random.Random(rng_seed)
    doc = json.loads(text)
    values: list[Any] = [None, 0, -1, 2**64, "", "x" * 300, [], {}, True, 1.5, "sha256:" + "0" * 64]
    for _ in range(1 + len(ops)):
        node = doc
        path: list[Any] = []
        while isinstance(node, (dict, list)) and node and rng.random() < 0.7:
            key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
            path.append(key)
            node = node[key]
        if not path:
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if rng.random() < 0.3 and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = rng.choice(values)
    return json.dumps(doc).encode()


# -- saving and the long run --------------------------------------------------------------


def save(kind: str, payload: bytes, meta: dict[str, Any]) -> Path:
    CRASHES.mkdir(parents=True, exist_ok=True)
    name = f"{kind}-{hashlib.sha256(payload).hexdigest()[:16]}"
    if kind == "layer":
        path = CRASHES / f"{name}.bin"
        path.write_bytes(payload)
    else:
        path = CRASHES / f"{name}.json"
        path.write_text(json.dumps({**meta, "data": payload.decode("latin-1")}))
    return path


def replay(path: Path) -> str:
    """Run one saved input again (what tests/test_fuzz.py does for each file)."""
    if path.suffix == ".bin":
        return check_layer(path.read_bytes())
    saved = json.loads(path.read_text())
    return check_image(saved["doc"], saved["data"].encode("latin-1"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fuzz extractor with mutated layers and images.")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    rng = random.Random(seed)
    print(f"fuzzing for {args.seconds:.0f} s, seed {seed}")
    tars = seed_tars()
    stop = time.monotonic() + args.seconds
    runs = failures = 0
    outcomes: dict[str, int] = {}
    seen: set[str] = set()  # one saved input per kind of failure and run
    while time.monotonic() < stop:
        runs += 1
        try:
            if rng.random() < 0.8:
                how = rng.choice(["none", "gzip", "zstd"])
                data = compress(rng.choice(tars), how)
                other = compress(rng.choice(tars), rng.choice(["none", "gzip", "zstd"]))
                payload = mutate(data, random_ops(rng), other)
                if rng.random() < 0.3 and how != "none":  # mutate the tar, then compress
                    payload = compress(mutate(rng.choice(tars), random_ops(rng), other), how)
                kind, meta = "layer", {}
                outcome = check_layer(payload, rootless=rng.random() < 0.3)
            else:
                doc = rng.choice(DOCS)
                payload = mutate_json(image_doc(doc), random_ops(rng), rng.getrandbits(32))
                kind, meta = "image", {"doc": doc}
                outcome = check_image(doc, payload)
            key = f"{kind}:{outcome}"
            outcomes[key] = outcomes.get(key, 0) + 1
        except FuzzError as e:
            failures += 1
            signature = f"{kind}: {str(e).splitlines()[0]}"
            if signature not in seen:
                seen.add(signature)
                print(f"FAILURE saved to {save(kind, payload, meta)}: {signature}")
    print(f"{runs} runs, {failures} failures; outcomes: {outcomes}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
