"""The benchmark inputs: layer stacks built from this machine's files and from seeded data.

Every stack is built once per scale under ``benchmarks/work/inputs/NAME-sSCALE/`` and reused
while its ``stack.json`` says it is complete and current. Building is deterministic: files are
walked in sorted order, subsets are chosen by hashing paths, synthetic data comes from seeded
generators, and the gzip/zstd encoders write no timestamps. Each stack is also written as an OCI
image layout (``oci/``, blobs hardlinked to the layer files) for ``umoci raw unpack``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import stat
import sys
import tarfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

try:
    import zstandard
except ImportError:  # run with the project's .venv/bin/python to have it
    zstandard = None

# the checkout's own extractor, whether or not it is installed in this Python
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from extractor.imagewrite import (
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    blob_path,
    oci_layout_files,
    write_files,
)

GENERATOR_VERSION = 1
MTIME = 1_700_000_000  # fixed mtime of synthetic entries
TAG = "bench"
MIB = 2**20

MEDIA_TYPES = {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}

# name -> one-line description (the README's inputs table uses these)
DESCRIPTIONS = {
    "usr-share": "real content: /usr/share (a hashed subset below scale 1), one gzip layer",
    "small-files": "100k files of 1 KiB (times scale) in 100 directories, one gzip layer",
    "multi-layer": "6 gzip layers sliced from /usr (without /usr/share), 512 MiB at scale 1, "
    "with whiteouts, an opaque dir and rewritten files in the upper layers",
    "big-files": "1152 MiB (times scale) of large files, half random, half text, 3 gzip layers",
    "usr-share-zstd": "the same tar as usr-share, zstd level 3",
}
NAMES = tuple(DESCRIPTIONS)


@dataclass
class LayerFile:
    """One built layer blob and what the benchmark needs to know about it."""

    path: str
    compression: str
    digest: str
    size: int
    diff_id: str
    tar_size: int
    entries: int


@dataclass
class Stack:
    """A list of layers applied oldest first, plus its OCI layout."""

    name: str
    scale: float
    layers: list[LayerFile] = field(default_factory=list)
    layout: str = ""

    @property
    def compression(self) -> str:
        return self.layers[0].compression

    @property
    def tar_bytes(self) -> int:
        return sum(layer.tar_size for layer in self.layers)

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)

    @property
    def entries(self) -> int:
        return sum(layer.entries for layer in self.layers)

    @property
    def image(self) -> str:
        """The ``--image`` argument of umoci."""
        return f"{self.layout}:{TAG}"


Log = Callable[[str], None]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# writing layers


class _HashingFile:
    """A binary file that also hashes and counts what is written to it."""

    def __init__(self, path: Path):
        self.file = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        if data:
            self.sha.update(data)
            self.size += len(data)
            self.file.write(data)

    def close(self) -> None:
        self.file.close()


class _Encoder:
    """Compresses into one output file."""

    def __init__(self, compression: str, path: Path):
        self.compression = compression
        self.path = path
        self.tmp = path.with_name(path.name + ".part")
        self.out = _HashingFile(self.tmp)
        if compression == "gzip":
            # wbits 31: a gzip member whose header has mtime 0, like `gzip -n`
            self.enc: Any = zlib.compressobj(6, zlib.DEFLATED, 31)
        elif compression == "zstd":
            if zstandard is None:
                raise RuntimeError("the zstandard module is needed for zstd layers")
            self.enc = zstandard.ZstdCompressor(level=3).compressobj()
        else:
            raise ValueError(compression)

    def write(self, data: bytes) -> None:
        self.out.write(self.enc.compress(data))

    def finish(self) -> None:
        self.out.write(self.enc.flush())
        self.out.close()
        os.replace(self.tmp, self.path)


class LayerWriter:
    """A tar stream that goes, uncompressed, through the diff_id hash into one or more encoders."""

    def __init__(self, outputs: list[tuple[str, Path]]):
        self.diff = hashlib.sha256()
        self.tar_size = 0
        self.encoders = [_Encoder(c, p) for c, p in outputs]
        self.tar = tarfile.open(fileobj=self, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self.emitted: set[str] = set()

    def tell(self) -> int:
        return self.tar_size

    # the file object tarfile writes to
    def write(self, data: bytes) -> int:
        self.diff.update(data)
        self.tar_size += len(data)
        for enc in self.encoders:
            enc.write(data)
        return len(data)

    def add_path(self, source: str, arcname: str) -> None:
        """Adds a file from this machine, as it is (hardlinks within the layer kept)."""
        self.tar.add(source, arcname=arcname, recursive=False, filter=_whole_seconds)
        self.emitted.add(arcname)

    def add_host_parents(self, root: str, arcname: str) -> None:
        """Adds the parent directories of ``arcname`` not yet in this layer, from the host."""
        parts = arcname.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent not in self.emitted:
                self.add_path(os.path.join(root, parent), parent)

    def add_member(self, info: tarfile.TarInfo, data: BinaryIO | None = None) -> None:
        self.tar.addfile(info, data)
        self.emitted.add(info.name)

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        if name not in self.emitted:
            self.add_member(synthetic(name, tarfile.DIRTYPE, mode=mode))

    def add_bytes(self, name: str, data: bytes, mode: int = 0o644) -> None:
        info = synthetic(name, tarfile.REGTYPE, mode=mode, size=len(data))
        self.add_member(info, _BytesReader(data))

    def finish(self) -> list[LayerFile]:
        entries = len(self.tar.members)
        self.tar.close()
        diff_id = "sha256:" + self.diff.hexdigest()
        layers = []
        for enc in self.encoders:
            enc.finish()
            layers.append(
                LayerFile(
                    path=str(enc.path),
                    compression=enc.compression,
                    digest="sha256:" + enc.out.sha.hexdigest(),
                    size=enc.out.size,
                    diff_id=diff_id,
                    tar_size=self.tar_size,
                    entries=entries,
                )
            )
        return layers


def _whole_seconds(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # like Docker: PAX format, mtimes truncated to seconds (so most headers stay plain ustar)
    info.mtime = int(info.mtime)
    return info


def synthetic(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


class _BytesReader:
    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.pos + n
        chunk = bytes(self.data[self.pos : end])
        self.pos += len(chunk)
        return chunk


class GeneratedReader:
    """``read(n)`` over ``size`` bytes produced 1 MiB at a time by ``chunk(index)``."""

    def __init__(self, size: int, chunk: Callable[[int], bytes]):
        self.chunk = chunk
        self.index = 0
        self.buf = memoryview(b"")
        self.pos = 0
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        parts = []
        while n > 0:
            if self.pos == len(self.buf):
                self.buf = memoryview(self.chunk(self.index))
                self.index += 1
                self.pos = 0
            take = min(n, len(self.buf) - self.pos)
            parts.append(self.buf[self.pos : self.pos + take])
            self.pos += take
            self.left -= take
            n -= take
        return b"".join(parts)


# ---------------------------------------------------------------------------
# synthetic data

_WORD_TEXT = (
    "the of and to in is that for it as with was on be by at this are from or an which have "
    "not but had they his one you were her all she there would their we him been has when who "
    "will more no if out so said what up its about into than them can only other new some could "
    "time these two may then do first any my now such like our over man me even most made after "
    "also did many before must through back years where much your way well down should because "
    "config value error return import class def self none true false null string int list dict "
    "path file data name type size mode uid gid mtime layer image digest sha256 tar gzip zstd"
)
_WORDS = _WORD_TEXT.split()


def text_pool(seed: int, size: int = MIB) -> bytes:
    """``size`` bytes of word salad with newlines: compresses like real text (~3x with gzip)."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        line = " ".join(rng.choices(_WORDS, k=rng.randint(4, 14)))
        out += line.encode() + b"\n"
    return bytes(out[:size])


def random_chunks(seed: int) -> Callable[[int], bytes]:
    def chunk(index: int) -> bytes:
        return random.Random(seed * 1_000_003 + index).randbytes(MIB)

    return chunk


def text_chunks(seed: int) -> Callable[[int], bytes]:
    pool = text_pool(seed)

    def chunk(index: int) -> bytes:
        cut = (index * 104_729) % len(pool)
        return pool[cut:] + pool[:cut]

    return chunk


# ---------------------------------------------------------------------------
# choosing files from this machine


@dataclass
class HostEntry:
    rel: str  # path relative to the walk's base (no leading slash)
    size: int
    is_dir: bool


def walk_host(base: str, top: str, exclude: tuple[str, ...] = ()) -> list[HostEntry]:
    """Every entry under ``base/top`` in sorted order (symlinks not followed)."""
    out: list[HostEntry] = []

    def rec(rel: str) -> None:
        try:
            names = sorted(os.listdir(os.path.join(base, rel)))
        except OSError:
            return
        for name in names:
            child = f"{rel}/{name}"
            if child in exclude:
                continue
            try:
                st = os.lstat(os.path.join(base, child))
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                out.append(HostEntry(child, 0, True))
                rec(child)
            elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                out.append(HostEntry(child, st.st_size if stat.S_ISREG(st.st_mode) else 0, False))

    rec(top)
    return out


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()[:8])


def choose(entries: list[HostEntry], budget: float) -> list[HostEntry]:
    """Whole directories' files, in hashed order, until ``budget`` bytes; sorted by path.

    With a budget at least the total, everything (empty directories included) is chosen.
    """
    total = sum(e.size for e in entries)
    if budget >= total:
        return list(entries)
    units: dict[str, list[HostEntry]] = {}
    for e in entries:
        if not e.is_dir:
            units.setdefault(e.rel.rsplit("/", 1)[0], []).append(e)
    chosen: list[HostEntry] = []
    used = 0
    for parent in sorted(units, key=_hash):
        size = sum(e.size for e in units[parent])
        if used + size <= budget:
            chosen.extend(units[parent])
            used += size
    return sorted(chosen, key=lambda e: e.rel)


# ---------------------------------------------------------------------------
# the five stacks


def _build_usr_share(stack_dir: Path, scale: float, log: Log) -> list[LayerFile]:
    entries = walk_host("/", "usr/share")
    total = sum(e.size for e in entries)
    chosen = choose(entries, total * scale)
    outputs = [("gzip", stack_dir / "layer.tar.gz")]
    if zstandard is not None:
        outputs.append(("zstd", stack_dir / "layer.tar.zst"))
    w = LayerWriter(outputs)
    w.add_path("/usr", "usr")
    w.add_path("/usr/share", "usr/share")
    for e in chosen:
        w.add_host_parents("/", e.rel)
        if e.rel not in w.emitted:
            w.add_path("/" + e.rel, e.rel)
    return w.finish()


def _build_small_files(stack_dir: Path, scale: float, log: Log) -> list[LayerFile]:
    count = max(100, round(100_000 * scale))
    pool = text_pool(2)
    w = LayerWriter([("gzip", stack_dir / "layer.tar.gz")])
    w.add_dir("srv")
    for i in range(count):
        d = f"srv/d{i % 100:03d}"
        w.add_dir(d)
        cut = (i * 7919) % (len(pool) - 1024)
        w.add_bytes(f"{d}/f{i:06d}.txt", pool[cut : cut + 1024])
    return w.finish()


LAYER_SHARES = (0.45, 0.20, 0.15, 0.10, 0.05, 0.05)


def _pick(items: list[HostEntry], count: int) -> list[HostEntry]:
    """``count`` items spread evenly over ``items``."""
    if not items:
        return []
    step = max(1, len(items) // (count + 1))
    return items[step::step][:count]


def _build_multi_layer(stack_dir: Path, scale: float, log: Log) -> list[LayerFile]:
    entries = walk_host("/", "usr", exclude=("usr/share",))
    chosen = [e for e in choose(entries, 512 * MIB * scale) if not e.is_dir]
    total = sum(e.size for e in chosen) or 1
    slices: list[list[HostEntry]] = [[] for _ in LAYER_SHARES]
    used, index, bound = 0, 0, LAYER_SHARES[0] * total
    for e in chosen:
        while used >= bound and index < len(LAYER_SHARES) - 1:
            index += 1
            bound += LAYER_SHARES[index] * total
        slices[index].append(e)
        used += e.size
    regular = [[e for e in s if os.path.isfile("/" + e.rel) and e.size > 0] for s in slices]
    gone_files = _pick(regular[0], 3)
    gone_dir = regular[1][len(regular[1]) // 2].rel.rsplit("/", 1)[0] if regular[1] else ""
    opaque_dir = ""
    for candidate in _pick(regular[0], 9):
        parent = candidate.rel.rsplit("/", 1)[0]
        if parent != gone_dir and not parent.startswith(gone_dir + "/"):
            opaque_dir = parent
            break
    rewritten = _pick(regular[0], 20)

    layers = []
    for i, part in enumerate(slices):
        w = LayerWriter([("gzip", stack_dir / f"layer{i + 1}.tar.gz")])
        for e in part:
            w.add_host_parents("/", e.rel)
            w.add_path("/" + e.rel, e.rel)
        if i == 3:  # whiteouts: three files of layer 1, a directory of layer 2
            for e in gone_files:
                name = e.rel.rsplit("/", 1)
                w.add_host_parents("/", e.rel)
                w.add_member(synthetic(f"{name[0]}/.wh.{name[1]}", tarfile.REGTYPE, 0o644))
            if gone_dir:
                parent, leaf = gone_dir.rsplit("/", 1)
                w.add_host_parents("/", gone_dir)
                w.add_member(synthetic(f"{parent}/.wh.{leaf}", tarfile.REGTYPE, 0o644))
        if i == 4 and opaque_dir:  # an opaque directory with three new files
            w.add_host_parents("/", opaque_dir + "/x")
            w.add_member(synthetic(f"{opaque_dir}/.wh..wh.opq", tarfile.REGTYPE, 0o644))
            for n in range(3):
                w.add_bytes(f"{opaque_dir}/new-{n}.conf", text_pool(40 + n, 2048))
        if i == 5:  # files of layer 1 rewritten, as an upgrade would
            for e in rewritten:
                w.add_host_parents("/", e.rel)
                info = _whole_seconds(w.tar.gettarinfo("/" + e.rel, arcname=e.rel))
                info.type, info.linkname = tarfile.REGTYPE, ""
                data = Path("/" + e.rel).read_bytes() + b"\n# rewritten by layer 6\n"
                info.size = len(data)
                w.add_member(info, _BytesReader(data))
        layers.extend(w.finish())
        log(f"  layer {i + 1}/6: {len(part)} files")
    return layers


BIG_LAYOUT = (
    (("random", 256), ("text", 128)),
    (("text", 192), ("random", 192)),
    (("random", 96), ("text", 96), ("random", 96), ("text", 96)),
)


def _build_big_files(stack_dir: Path, scale: float, log: Log) -> list[LayerFile]:
    layers = []
    for i, files in enumerate(BIG_LAYOUT):
        w = LayerWriter([("gzip", stack_dir / f"layer{i + 1}.tar.gz")])
        w.add_dir("data")
        for j, (kind, mib) in enumerate(files):
            size = max(4096, round(mib * MIB * scale / 4096) * 4096)
            seed = 100 + 10 * i + j
            chunks = random_chunks(seed) if kind == "random" else text_chunks(seed)
            info = synthetic(f"data/{kind}-{i + 1}-{j + 1}.bin", tarfile.REGTYPE, 0o644, size)
            w.add_member(info, GeneratedReader(size, chunks))
        layers.extend(w.finish())
    return layers


BUILDERS: dict[str, Callable[[Path, float, Log], list[LayerFile]]] = {
    "usr-share": _build_usr_share,
    "small-files": _build_small_files,
    "multi-layer": _build_multi_layer,
    "big-files": _build_big_files,
}


# ---------------------------------------------------------------------------
# OCI layout


def write_layout(stack: Stack, layout: Path) -> None:
    """An OCI image layout holding the stack, tagged ``bench``."""
    if layout.exists():
        shutil.rmtree(layout)
    (layout / "blobs" / "sha256").mkdir(parents=True)
    for layer in stack.layers:
        blob = layout / blob_path(layer.digest)
        if blob.exists():  # a manifest may list one blob more than once
            continue
        try:
            os.link(layer.path, blob)
        except OSError:
            shutil.copyfile(layer.path, blob)
    descriptors = [
        {"mediaType": MEDIA_TYPES[layer.compression], "digest": layer.digest, "size": layer.size}
        for layer in stack.layers
    ]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in stack.layers]},
        "history": [{"created_by": f"benchmark layer {i + 1}"} for i in range(len(stack.layers))],
    }
    write_files(layout, oci_layout_files(descriptors, config, TAG))


# ---------------------------------------------------------------------------
# the cache


def _stack_dir(inputs: Path, name: str, scale: float) -> Path:
    return inputs / f"{name}-s{scale:g}"


def _load(stack_dir: Path) -> Stack | None:
    try:
        doc = json.loads((stack_dir / "stack.json").read_text())
    except (OSError, ValueError):
        return None
    if doc.get("generator") != GENERATOR_VERSION:
        return None
    stack = Stack(doc["name"], doc["scale"], [LayerFile(**x) for x in doc["layers"]], doc["layout"])
    for layer in stack.layers:
        try:
            if os.path.getsize(layer.path) != layer.size:
                return None
        except OSError:
            return None
    if not os.path.exists(os.path.join(stack.layout, "index.json")):
        return None
    return stack


def _save(stack_dir: Path, stack: Stack) -> None:
    doc = {"generator": GENERATOR_VERSION, **asdict(stack)}
    tmp = stack_dir / "stack.json.part"
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, stack_dir / "stack.json")


def build(inputs: Path, names: list[str], scale: float, log: Log = _log) -> dict[str, Stack]:
    """The stacks named, built under ``inputs`` unless already there."""
    stacks: dict[str, Stack] = {}
    for name in names:
        if name in stacks:  # built with its twin
            continue
        cached = _load(_stack_dir(inputs, name, scale))
        if cached is not None:
            stacks[name] = cached
            continue
        if name == "usr-share-zstd" and zstandard is None:
            log("  usr-share-zstd: skipped (no zstandard module; run with .venv/bin/python)")
            continue
        base = "usr-share" if name == "usr-share-zstd" else name
        for built in _build(inputs, base, scale, log):
            stacks[built.name] = built
    return {n: stacks[n] for n in names if n in stacks}


def _build(inputs: Path, name: str, scale: float, log: Log) -> Iterator[Stack]:
    stack_dir = _stack_dir(inputs, name, scale)
    if stack_dir.exists():
        shutil.rmtree(stack_dir)
    stack_dir.mkdir(parents=True)
    log(f"building input {name} at scale {scale:g} in {stack_dir} ...")
    started = time.monotonic()
    layers = BUILDERS[name](stack_dir, scale, log)
    groups = {"gzip": [x for x in layers if x.compression == "gzip"]}
    if name == "usr-share" and any(x.compression == "zstd" for x in layers):
        groups["zstd"] = [x for x in layers if x.compression == "zstd"]
    for compression, group in groups.items():
        full = name if compression == "gzip" else f"{name}-zstd"
        target = stack_dir if full == name else _stack_dir(inputs, full, scale)
        if target != stack_dir:
            if target.exists():
                shutil.rmtree(target)
            target.mkdir(parents=True)
            for layer in group:  # the zstd twin lives in its own stack directory
                moved = target / Path(layer.path).name
                os.replace(layer.path, moved)
                layer.path = str(moved)
        stack = Stack(full, scale, group, str(target / "oci"))
        write_layout(stack, Path(stack.layout))
        _save(target, stack)
        log(
            f"  {full}: {len(group)} layer(s), {stack.entries:,} entries, "
            f"{stack.tar_bytes / MIB:.1f} MiB tar -> {stack.size / MIB:.1f} MiB {compression}"
            f" ({time.monotonic() - started:.1f} s)"
        )
        yield stack
