"""Random access to the tar inside an archive file, compressed or not.

``docker save img | gzip > img.tgz`` is a common way to carry images, and
``docker load`` takes it; so does this reader, without unpacking the archive
to disk and without holding it in memory. Each source presents the
uncompressed tar as a stream with ``read``, ``skip``, ``tell`` and ``seek``:

* ``PlainSource``: an uncompressed tar; seeking is free.
* ``GzipSource``: inflates forward, and while the archive is indexed it
  keeps *checkpoints* (a copy of the inflater's state, about 40 KB each, at
  a member boundary) so that reading any member later restarts near it
  rather than at the start of the file. Layers of a ``docker save`` are not
  stored in manifest order (the tar is sorted by layer id), so without them
  unpacking N layers would inflate the archive about N/2 times.
* ``ZstdSource``: zstd decoders cannot be copied, so it reads forward and
  restarts from the beginning only when asked for an earlier offset.
"""

from __future__ import annotations

import bisect
import zlib
from dataclasses import dataclass
from typing import BinaryIO

import zstandard

from ..errors import BadInputError

RAW_CHUNK = 256 << 10
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

# A checkpoint is taken at a member boundary once this many uncompressed
# bytes have passed since the last one, so reaching any member costs at most
# this much inflating. When there would be more than MAX_CHECKPOINTS, every
# other one is dropped and the spacing doubles: memory stays bounded
# (MAX_CHECKPOINTS x ~40 KB of zlib state) for archives of any size.
CHECKPOINT_SPACING = 4 << 20
MAX_CHECKPOINTS = 256


class PlainSource:
    """An uncompressed tar file: reads and seeks go straight to the file."""

    compression = "none"

    def __init__(self, f: BinaryIO, size: int):
        self._f = f
        self._size = size
        self._pos = 0

    def tell(self) -> int:
        return self._pos

    def read(self, n: int, /) -> bytes:
        data = self._f.read(n)
        self._pos += len(data)
        return data

    def skip(self, n: int, /) -> None:
        if self._pos + n > self._size:
            raise BadInputError("truncated archive: a member ends past the end of the file")
        self.seek(self._pos + n)

    def seek(self, pos: int) -> None:
        if pos != self._pos:
            self._f.seek(pos)
            self._pos = pos

    def mark(self) -> None:
        return None


def _skip_forward(source: GzipSource | ZstdSource, n: int) -> None:
    while n > 0:
        got = len(source.read(min(n, RAW_CHUNK * 4)))
        if not got:
            raise BadInputError("truncated archive: unexpected end of compressed data")
        n -= got


@dataclass(frozen=True, slots=True)
class _Checkpoint:
    pos: int  # uncompressed offset this state produces next
    file_offset: int  # where the compressed input resumes
    inflater: zlib._Decompress | None  # None: a gzip member header comes next


class GzipSource:
    """Inflates a (multi-member) gzip file, with checkpoints for going back cheaply.

    ``zlib`` rather than ``isal`` because only zlib's decompressor can be
    copied, which is what a checkpoint is.
    """

    compression = "gzip"

    def __init__(self, f: BinaryIO):
        self._f = f
        self._spacing = CHECKPOINT_SPACING
        self._checkpoints = [_Checkpoint(0, 0, None)]
        self._restore(self._checkpoints[0])

    def _restore(self, cp: _Checkpoint) -> None:
        self._f.seek(cp.file_offset)
        self._file_pos = cp.file_offset
        self._input = b""  # compressed bytes read but not yet fed to the inflater
        self._inflater = cp.inflater.copy() if cp.inflater is not None else None
        self._pos = cp.pos
        self._ended = False

    def tell(self) -> int:
        return self._pos

    def _fill(self) -> bytes:
        data = self._f.read(RAW_CHUNK)
        self._file_pos += len(data)
        return data

    def _start_member(self) -> bool:
        while len(self._input) < 2:
            more = self._fill()
            if not more:
                break
            self._input += more
        if not self._input:
            return False
        if self._input.startswith(GZIP_MAGIC):
            self._inflater = zlib.decompressobj(31)
            return True
        # Zero padding may follow the last member (GNU gzip accepts it too).
        if self._input.count(0) == len(self._input):
            return False
        raise BadInputError("corrupt gzip archive: trailing garbage after the compressed data")

    def read(self, n: int, /) -> bytes:
        if n <= 0:
            return b""  # zlib takes a max_length of 0 as "no limit"
        while not self._ended:
            if self._inflater is None and not self._start_member():
                self._ended = True
                break
            assert self._inflater is not None
            if not self._input:
                self._input = self._fill()
                if not self._input:
                    raise BadInputError("truncated gzip archive (no end of data)")
            try:
                out = self._inflater.decompress(self._input, n)
            except zlib.error as e:
                raise BadInputError(f"corrupt gzip archive: {e}") from None
            if self._inflater.eof:
                self._input = self._inflater.unused_data
                self._inflater = None
            else:
                self._input = self._inflater.unconsumed_tail
            if out:
                self._pos += len(out)
                return out
        return b""

    def skip(self, n: int, /) -> None:
        _skip_forward(self, n)

    def mark(self) -> None:
        """A member starts here: keep a checkpoint if the last one is far enough back."""
        if self._pos - self._checkpoints[-1].pos < self._spacing:
            return
        inflater = self._inflater.copy() if self._inflater is not None else None
        self._checkpoints.append(
            _Checkpoint(self._pos, self._file_pos - len(self._input), inflater)
        )
        if len(self._checkpoints) > MAX_CHECKPOINTS:
            self._checkpoints = self._checkpoints[::2]
            self._spacing *= 2

    def seek(self, pos: int) -> None:
        if pos == self._pos:
            return
        i = bisect.bisect_right([cp.pos for cp in self._checkpoints], pos) - 1
        cp = self._checkpoints[i]
        # Going back, or a checkpoint nearer than the current position: jump.
        if pos < self._pos or cp.pos > self._pos:
            self._restore(cp)
        _skip_forward(self, pos - self._pos)


class ZstdSource:
    """Decompresses a zstd file forward; going back restarts from the beginning."""

    compression = "zstd"

    def __init__(self, f: BinaryIO):
        self._f = f
        self._restart()

    def _restart(self) -> None:
        self._f.seek(0)
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            self._f, read_size=RAW_CHUNK, read_across_frames=True, closefd=False
        )
        self._pos = 0

    def tell(self) -> int:
        return self._pos

    def read(self, n: int, /) -> bytes:
        try:
            out = self._reader.read(n)
        except zstandard.ZstdError as e:
            raise BadInputError(f"corrupt zstd archive: {e}") from None
        self._pos += len(out)
        return out

    def skip(self, n: int, /) -> None:
        _skip_forward(self, n)

    def mark(self) -> None:
        return None

    def seek(self, pos: int) -> None:
        if pos < self._pos:
            self._restart()
        _skip_forward(self, pos - self._pos)
