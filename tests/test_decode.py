"""Layer byte streams: sniffing, gzip and zstd edge cases, digests, pipes and bounded memory.

``LayerStream`` is exercised directly (drained with ``read``) and through
``apply_layers``, so a decoder that hides a fault behind short data is still
caught by what lands (or does not land) in the tree.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import os
import platform
import random
import resource
import struct
import subprocess
import sys
import tarfile
import threading
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard
from builders import MTIME, Layer

from extractor import ApplyResult, BadInputError, apply_layers
from extractor.decode import CHUNK, LayerStream

MiB = 1 << 20
SKIPPABLE = 0x184D2A50


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _zstd(data: bytes, checksum: bool = True) -> bytes:
    return zstandard.ZstdCompressor(write_checksum=checksum).compress(data)


def _skippable(payload: bytes, magic: int = SKIPPABLE) -> bytes:
    """A zstd skippable frame: magic and payload length, little-endian, then the payload."""
    return struct.pack("<II", magic, len(payload)) + payload


def _drain(source: bytes | io.RawIOBase | io.BufferedIOBase) -> tuple[bytes, LayerStream]:
    """Read a layer to its end through ``LayerStream.read``; returns (data, stream)."""
    stream_source = io.BytesIO(source) if isinstance(source, bytes) else source
    out = bytearray()
    with LayerStream(stream_source) as stream:  # type: ignore[arg-type]
        while chunk := stream.read(CHUNK):
            out += chunk
    return bytes(out), stream


def _apply(dest: Path, *blobs: bytes) -> ApplyResult:
    """Apply in-memory layer blobs, oldest first."""
    return apply_layers(dest, [io.BytesIO(blob) for blob in blobs])


def _small_tar() -> bytes:
    """A layer with a directory and two files, several blocks long."""
    return (
        Layer()
        .dir("etc")
        .file("etc/hostname", b"box\n")
        .file("data.bin", bytes(range(256)) * 20)
        .tar()
    )


def _big_tar(seed: int = 1) -> bytes:
    """A ~3 MiB layer of incompressible data, so zstd writes many blocks."""
    rng = random.Random(seed)
    return (
        Layer()
        .file("one", rng.randbytes(MiB + 17))
        .file("two", rng.randbytes(2 * MiB))
        .file("three", b"end\n")
        .tar()
    )


def _assert_small_tree(dest: Path) -> None:
    assert (dest / "etc" / "hostname").read_bytes() == b"box\n"
    assert (dest / "data.bin").read_bytes() == bytes(range(256)) * 20


# -- sniffing ----------------------------------------------------------------

SNIFF_CASES = {
    "gzip named .tar": ("layer.tar", _gzip, "gzip"),
    "gzip named .zst": ("layer.tar.zst", _gzip, "gzip"),
    "zstd named .gz": ("layer.tar.gz", _zstd, "zstd"),
    "zstd named .tar": ("layer.tar", _zstd, "zstd"),
    "plain named .gz": ("layer.tar.gz", lambda d: d, "none"),
    "plain named .zst": ("layer.tar.zst", lambda d: d, "none"),
    "gzip with no extension": ("blob", _gzip, "gzip"),
}


@pytest.mark.parametrize(
    ("filename", "compress", "expected"), SNIFF_CASES.values(), ids=SNIFF_CASES
)
def test_compression_is_sniffed_from_magic_not_name(
    tmp_path: Path, filename: str, compress: Callable[[bytes], bytes], expected: str
) -> None:
    """The compression is taken from the first bytes whatever the file is called."""
    tar = _small_tar()
    path = tmp_path / filename
    path.write_bytes(compress(tar))
    with LayerStream(path) as stream:
        assert stream.compression == expected
    result = apply_layers(tmp_path / "root", [path])
    assert result.layers[0].compression == expected
    assert result.layers[0].diff_id == _sha(tar)
    _assert_small_tree(tmp_path / "root")


# -- gzip ----------------------------------------------------------------------


def _members(data: bytes, cuts: list[int]) -> bytes:
    """``data`` cut at ``cuts`` and each piece gzipped as its own member, concatenated."""
    bounds = [0, *cuts, len(data)]
    return b"".join(_gzip(data[a:b]) for a, b in itertools.pairwise(bounds))


MULTI_MEMBER = {
    "cut inside the first header": [100],
    "cut inside file data": [700],
    "cut on a block boundary": [1024],
    "three members": [300, 2000],
    "an empty member in the middle": [1536, 1536],
}


@pytest.mark.parametrize("cuts", MULTI_MEMBER.values(), ids=MULTI_MEMBER)
def test_multi_member_gzip_decodes_to_the_whole_tar(tmp_path: Path, cuts: list[int]) -> None:
    """Concatenated gzip members, each a piece of the tar, decode to the whole tar."""
    tar = _small_tar()
    blob = _members(tar, cuts)
    data, stream = _drain(blob)
    assert data == tar
    assert stream.compression == "gzip"
    result = _apply(tmp_path, blob)
    assert result.layers[0].diff_id == _sha(tar)
    assert result.layers[0].digest == _sha(blob)
    _assert_small_tree(tmp_path)


def test_gzip_written_by_gzip_and_pigz_tools(tmp_path: Path) -> None:
    """Members with an FNAME header (gzip(1)) and pigz output decode like any other."""
    tar = _small_tar()
    src = tmp_path / "layer.tar"
    src.write_bytes(tar)
    for tool in (["gzip", "-c", "-N"], ["pigz", "-c"]):
        blob = subprocess.run([*tool, str(src)], check=True, capture_output=True).stdout
        data, stream = _drain(blob)
        assert stream.compression == "gzip", tool
        assert data == tar, tool


ZERO_PADDING = {"one zero": 1, "a block of zeros": 512, "zeros past one chunk": CHUNK + CHUNK // 2}


@pytest.mark.parametrize("pad", ZERO_PADDING.values(), ids=ZERO_PADDING)
def test_zero_padding_after_gzip_is_accepted_and_hashed(tmp_path: Path, pad: int) -> None:
    """Zero bytes after the last member are padding: accepted, and part of the digest."""
    tar = _small_tar()
    blob = _gzip(tar) + bytes(pad)
    with LayerStream(io.BytesIO(blob)) as stream:
        assert stream.finish() == (_sha(blob), _sha(tar))
        assert stream.raw_bytes == len(blob)
    result = _apply(tmp_path, blob)
    assert (result.layers[0].digest, result.layers[0].diff_id) == (_sha(blob), _sha(tar))
    assert result.layers[0].size == len(blob)
    _assert_small_tree(tmp_path)


GZIP_TRAILERS = {
    "text": b"garbage",
    "one byte": b"x",
    "zeros then text": bytes(600) + b"junk",
    "text past one chunk of zeros": bytes(CHUNK + 5) + b"\x01",
    "lone first magic byte": b"\x1f",
    "magic of a member with nothing after": b"\x1f\x8b",
    "an xz header": b"\xfd7zXZ\x00\x00",
}


@pytest.mark.parametrize("trailer", GZIP_TRAILERS.values(), ids=GZIP_TRAILERS)
def test_trailing_garbage_after_gzip_is_bad_input(tmp_path: Path, trailer: bytes) -> None:
    """Anything but zero padding after the last gzip member is a BadInputError."""
    blob = _gzip(_small_tar()) + trailer
    with pytest.raises(BadInputError):
        _drain(blob)
    with pytest.raises(BadInputError), LayerStream(io.BytesIO(blob)) as stream:
        stream.finish()
    with pytest.raises(BadInputError):
        _apply(tmp_path, blob)


def _gzip_cuts() -> dict[str, Callable[[bytes], bytes]]:
    return {
        "header only": lambda g: g[:10],
        "cut in the middle": lambda g: g[: len(g) // 2],
        "cut just before the 8-byte trailer": lambda g: g[:-8],
        "cut inside the trailer": lambda g: g[:-3],
        "one byte short": lambda g: g[:-1],
        "second member cut": lambda g: g + _gzip(b"\0" * 4096)[:-8],
    }


@pytest.mark.parametrize("cut", _gzip_cuts().values(), ids=_gzip_cuts())
def test_truncated_gzip_is_bad_input(tmp_path: Path, cut: Callable[[bytes], bytes]) -> None:
    """A gzip stream that ends early is a BadInputError, read directly or applied."""
    blob = cut(_gzip(_big_tar()))
    with pytest.raises(BadInputError):
        _drain(blob)
    with pytest.raises(BadInputError):
        _apply(tmp_path, blob)


def _flip(data: bytes, pos: int, mask: int = 0xFF) -> bytes:
    return data[:pos] + bytes([data[pos] ^ mask]) + data[pos + 1 :]


GZIP_CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "deflate data, early": lambda g: _flip(g, 40),
    "deflate data, middle": lambda g: _flip(g, len(g) // 2),
    "several deflate bytes": lambda g: _flip(_flip(_flip(g, 300), 301), 302),
    "the CRC32": lambda g: _flip(g, len(g) - 8, 1),
    "the length (ISIZE)": lambda g: _flip(g, len(g) - 4, 1),
    "the compression method": lambda g: _flip(g, 2, 0x01),
}


@pytest.mark.parametrize("corrupt", GZIP_CORRUPTIONS.values(), ids=GZIP_CORRUPTIONS)
def test_corrupt_gzip_is_bad_input(tmp_path: Path, corrupt: Callable[[bytes], bytes]) -> None:
    """Flipped bytes in a gzip stream are a BadInputError, read directly or applied."""
    blob = corrupt(_gzip(_small_tar()))
    with pytest.raises(BadInputError):
        _drain(blob)
    with pytest.raises(BadInputError):
        _apply(tmp_path, blob)


# -- zstd ----------------------------------------------------------------------


def _zstd_frames(tar: bytes) -> dict[str, bytes]:
    third = len(tar) // 3
    return {
        "leading skippable frame": _skippable(b"metadata!") + _zstd(tar),
        "leading skippable frame, last magic variant": _skippable(b"x" * 100, SKIPPABLE + 15)
        + _zstd(tar),
        "empty skippable frame first": _skippable(b"") + _zstd(tar),
        "two frames": _zstd(tar[:1000]) + _zstd(tar[1000:]),
        "three frames with skippable frames between and after": _zstd(tar[:third])
        + _skippable(b"a" * 7)
        + _zstd(tar[third : 2 * third], checksum=False)
        + _skippable(b"b" * 70000)
        + _zstd(tar[2 * third :])
        + _skippable(b"tail"),
    }


@pytest.mark.parametrize("name", list(_zstd_frames(b"")))
def test_zstd_skippable_and_multiple_frames_decode_everything(tmp_path: Path, name: str) -> None:
    """Skippable frames are skipped and every data frame is decoded, in order."""
    tar = _small_tar()
    blob = _zstd_frames(tar)[name]
    data, stream = _drain(blob)
    assert stream.compression == "zstd"
    assert data == tar
    result = _apply(tmp_path, blob)
    assert (result.layers[0].digest, result.layers[0].diff_id) == (_sha(blob), _sha(tar))
    _assert_small_tree(tmp_path)


ZSTD_CUTS: dict[str, Callable[[bytes], bytes]] = {
    "only the magic": lambda z: z[:4],
    "cut in the frame header": lambda z: z[:7],
    "cut in the middle": lambda z: z[: len(z) // 2],
    "cut in the last block": lambda z: z[: len(z) - 100],
    "content checksum missing": lambda z: z[:-4],
    "one byte short": lambda z: z[:-1],
}


@pytest.mark.parametrize("cut", ZSTD_CUTS.values(), ids=ZSTD_CUTS)
def test_truncated_zstd_is_bad_input_when_read(cut: Callable[[bytes], bytes]) -> None:
    """A zstd frame that ends early is a BadInputError from LayerStream itself."""
    blob = cut(_zstd(_big_tar()))
    with pytest.raises(BadInputError):
        _drain(blob)


@pytest.mark.parametrize("cut", ZSTD_CUTS.values(), ids=ZSTD_CUTS)
def test_truncated_zstd_is_bad_input_when_applied(
    tmp_path: Path, cut: Callable[[bytes], bytes]
) -> None:
    """Applying a zstd layer that ends early fails with BadInputError."""
    blob = cut(_zstd(_big_tar()))
    with pytest.raises(BadInputError):
        _apply(tmp_path / "root", blob)


def test_truncated_small_zstd_frame_without_checksum_is_bad_input(tmp_path: Path) -> None:
    """A one-block zstd layer missing its last byte is refused, not applied as empty."""
    blob = _zstd(_small_tar(), checksum=False)[:-1]
    with pytest.raises(BadInputError):
        _apply(tmp_path / "root", blob)
    assert not (tmp_path / "root" / "etc").exists()


ZSTD_CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "block data, early": lambda z: _flip(z, 40),
    "block data, middle": lambda z: _flip(z, len(z) // 2),
    "content checksum": lambda z: _flip(z, len(z) - 2),
    "garbage after the frame": lambda z: z + b"garbage!",
}


@pytest.mark.parametrize("corrupt", ZSTD_CORRUPTIONS.values(), ids=ZSTD_CORRUPTIONS)
def test_corrupt_zstd_is_bad_input(tmp_path: Path, corrupt: Callable[[bytes], bytes]) -> None:
    """Flipped bytes in a zstd frame are a BadInputError, read directly or applied."""
    blob = corrupt(_zstd(_big_tar()))
    with pytest.raises(BadInputError):
        _drain(blob)
    with pytest.raises(BadInputError):
        _apply(tmp_path / "root", blob)


# -- empty layers and digests ----------------------------------------------------

EMPTY_LAYERS = {
    "zero bytes": (b"", "none", b""),
    "gzip of nothing": (_gzip(b""), "gzip", b""),
    "zstd of nothing": (_zstd(b""), "zstd", b""),
    "only end-of-archive blocks": (bytes(1024), "none", bytes(1024)),
}


@pytest.mark.parametrize(("blob", "compression", "tar"), EMPTY_LAYERS.values(), ids=EMPTY_LAYERS)
def test_empty_layer_applies_as_an_empty_layer(
    tmp_path: Path, blob: bytes, compression: str, tar: bytes
) -> None:
    """A layer with no entries changes nothing below it and reports its digests."""
    base = Layer().file("kept", b"lower\n").tar()
    empty = tmp_path / "empty.layer"
    empty.write_bytes(blob)
    result = apply_layers(tmp_path / "root", [io.BytesIO(base), empty])
    report = result.layers[1]
    assert (report.entries, report.compression) == (0, compression)
    assert (report.digest, report.diff_id) == (_sha(blob), _sha(tar))
    assert report.size == len(blob)
    assert os.listdir(tmp_path / "root") == ["kept"]
    assert (tmp_path / "root" / "kept").read_bytes() == b"lower\n"


def _tails() -> dict[str, bytes]:
    return {
        "no tail": b"",
        "extra zero blocks": bytes(512 * 30),
        "a whole extra chunk of zeros": bytes(CHUNK + 512),
        "junk after the end-of-archive blocks": b"this is not tar data\n" * 40,
        "a valid header after the end-of-archive blocks": Layer().file("ghost", b"boo").tar(),
    }


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "none": lambda d: d,
    "gzip": _gzip,
    "zstd": _zstd,
}


@pytest.mark.parametrize("compression", list(COMPRESSORS))
@pytest.mark.parametrize("tail", list(_tails()))
def test_finish_digests_match_hashlib_over_all_bytes(
    tmp_path: Path, compression: str, tail: str
) -> None:
    """``finish()`` hashes every raw and every uncompressed byte, the tar's tail included."""
    tar = _small_tar() + _tails()[tail]
    blob = COMPRESSORS[compression](tar)
    with LayerStream(io.BytesIO(blob)) as stream:
        stream.read(700)  # part-way in, as the tar reader leaves it
        assert stream.finish() == (_sha(blob), _sha(tar))
        assert (stream.raw_bytes, stream.uncompressed_size) == (len(blob), len(tar))
    result = _apply(tmp_path, blob)
    report = result.layers[0]
    assert (report.digest, report.diff_id) == (_sha(blob), _sha(tar))
    assert (report.size, report.uncompressed_size) == (len(blob), len(tar))
    _assert_small_tree(tmp_path)
    assert not (tmp_path / "ghost").exists()


def test_finish_without_reading_drains_everything() -> None:
    """``finish()`` on an untouched stream gives the same digests as hashing the blob."""
    tar = _big_tar()
    for compress in COMPRESSORS.values():
        blob = compress(tar)
        with LayerStream(io.BytesIO(blob)) as stream:
            assert stream.finish() == (_sha(blob), _sha(tar))


# -- non-seekable sources --------------------------------------------------------


class _PipeWriter(threading.Thread):
    """Writes a blob into a pipe's write end from another thread, then closes it."""

    def __init__(self, fd: int, blob: bytes):
        super().__init__(daemon=True)
        self.fd = fd
        self.blob = blob
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            view = memoryview(self.blob)
            while view:
                view = view[os.write(self.fd, view[:65536]) :]
        except BrokenPipeError as e:  # the reader gave up early
            self.error = e
        finally:
            os.close(self.fd)


@pytest.mark.parametrize("compression", list(COMPRESSORS))
def test_layer_from_a_pipe(tmp_path: Path, compression: str) -> None:
    """A layer read from a pipe (not seekable) applies and is hashed in full."""
    tar = _big_tar() + bytes(4096)
    blob = COMPRESSORS[compression](tar)
    r, w = os.pipe()
    writer = _PipeWriter(w, blob)
    writer.start()
    with os.fdopen(r, "rb") as pipe:
        assert not pipe.seekable()
        result = apply_layers(tmp_path, [pipe])
    writer.join(10)
    assert not writer.is_alive()
    assert writer.error is None
    report = result.layers[0]
    assert (report.compression, report.digest, report.diff_id) == (
        compression,
        _sha(blob),
        _sha(tar),
    )
    assert (tmp_path / "three").read_bytes() == b"end\n"
    assert (tmp_path / "two").stat().st_size == 2 * MiB


def test_layer_stream_reads_a_raw_pipe_in_small_pieces() -> None:
    """LayerStream reads an unbuffered pipe, which returns short reads, to the last byte."""
    tar = _small_tar()
    blob = _gzip(tar) + bytes(100)
    r, w = os.pipe()
    writer = _PipeWriter(w, blob)
    writer.start()
    with os.fdopen(r, "rb", buffering=0) as pipe:
        data, stream = _drain(pipe)
        assert stream.finish() == (_sha(blob), _sha(tar))
    writer.join(10)
    assert data == tar


# -- bounded memory ----------------------------------------------------------------

BOMB_SIZE = 200 * MiB


def _bomb_chunks() -> list[bytes]:
    """An uncompressed tar of one 200 MiB file of zeros, in 1 MiB pieces (shared zeros)."""
    info = tarfile.TarInfo("zeros")
    info.size, info.mtime, info.mode = BOMB_SIZE, MTIME, 0o644
    head = info.tobuf(tarfile.PAX_FORMAT)
    zeros = bytes(MiB)
    return [head, *([zeros] * (BOMB_SIZE // MiB)), bytes(1024)]


def _gzip_bomb() -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    return b"".join([*(comp.compress(c) for c in _bomb_chunks()), comp.flush()])


def _zstd_bomb() -> bytes:
    comp = zstandard.ZstdCompressor().compressobj()
    return b"".join([*(comp.compress(c) for c in _bomb_chunks()), comp.flush()])


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """A gzip and a zstd layer that each expand to a 200 MiB tar."""
    return {"gzip": _gzip_bomb(), "zstd": _zstd_bomb()}


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_decoding_a_bomb_keeps_python_memory_bounded(
    bombs: dict[str, bytes], compression: str
) -> None:
    """Reading a 1000:1 layer through LayerStream never holds more than ~64 MiB at once."""
    blob = bombs[compression]
    assert len(blob) < 300_000
    total = 0
    tracemalloc.start()
    try:
        with LayerStream(io.BytesIO(blob)) as stream:
            while chunk := stream.read(CHUNK):
                total += len(chunk)
            digests = stream.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == BOMB_SIZE + 512 * 3
    assert digests[0] == _sha(blob)
    assert peak < 64 * MiB, f"peak {peak / MiB:.1f} MiB"


def test_applying_a_bomb_streams_to_disk(tmp_path: Path, bombs: dict[str, bytes]) -> None:
    """A gzip bomb applies in bounded memory: the file is written, RSS does not grow by it."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = _apply(tmp_path, bombs["gzip"])
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    target = tmp_path / "zeros"
    assert target.stat().st_size == BOMB_SIZE
    with open(target, "rb") as f:
        for offset in (0, BOMB_SIZE // 2, BOMB_SIZE - MiB):
            f.seek(offset)
            assert f.read(MiB) == bytes(MiB)
    assert result.layers[0].uncompressed_size == BOMB_SIZE + 512 * 3
    assert grown_kib < 64 * 1024, f"max RSS grew by {grown_kib} KiB"


# Frees 24 MiB of 1 MiB chunks, makes them again and prints the page faults that
# took: none if freed memory was kept, about 6,000 if it went back to the kernel.
_REFAULTS = """
import resource, sys
how = sys.argv[1]
if how == "call":
    from extractor.decode import retain_freed_chunks
    retain_freed_chunks()
elif how == "cli":
    from extractor.cli import main
    assert main(["apply", "-q", sys.argv[2], sys.argv[3]]) == 0
chunks = [b"x" * (1 << 20) for _ in range(24)]
del chunks
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
chunks = [b"x" * (1 << 20) for _ in range(24)]
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt tuning is for glibc only")
def test_freed_chunks_are_kept_for_reuse_by_the_command_line(tmp_path: Path) -> None:
    """Decoded chunks come and go a MiB at a time; the command line has malloc keep
    freed ones instead of faulting fresh pages in for every chunk."""
    layer = tmp_path / "layer.tar"
    layer.write_bytes(Layer().file("f", b"x").tar())

    def refaults(how: str) -> int:
        run = subprocess.run(
            [sys.executable, "-c", _REFAULTS, how, str(tmp_path / f"root-{how}"), str(layer)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return int(run.stdout)

    assert refaults("default") > 3000  # the probe sees the difference
    assert refaults("call") < 500
    assert refaults("cli") < 500


_ARENAS = """
import ctypes, sys, threading
from extractor import decode
if sys.argv[1] == "call":
    decode.retain_freed_chunks()
barrier = threading.Barrier(6)
def hold() -> None:
    chunk = bytes(1 << 20)  # below the mmap threshold: from the thread's arena
    barrier.wait()
    del chunk
threads = [threading.Thread(target=hold) for _ in range(6)]
for t in threads:
    t.start()
for t in threads:
    t.join()
ctypes.CDLL(None).malloc_stats()  # one "Arena N:" block per arena, on stderr
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt tuning is for glibc only")
def test_decoding_threads_share_at_most_two_malloc_arenas() -> None:
    """Each arena keeps its own freed chunks: threads that each got one made the
    RSS of a long stack of layers climb past 100 MiB."""

    def arenas(how: str) -> int:
        run = subprocess.run(
            [sys.executable, "-c", _ARENAS, how],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return run.stderr.count("Arena ")

    assert arenas("default") > 2  # the probe sees the difference
    assert arenas("call") <= 2
