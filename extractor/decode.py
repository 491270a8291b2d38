"""Layer byte streams: sniff the compression, decompress, and hash while reading.

A layer is read once, front to back, in bounded chunks: never held whole in
memory and never spooled to disk. Two digests come out of one pass: the
``digest`` of the bytes as stored (what a descriptor names) and the ``diff_id``
of the uncompressed tar (what an image config's ``rootfs.diff_ids`` names).
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import select
import stat
import threading
from collections.abc import Callable
from typing import IO, Protocol

from isal import isal_zlib

from .errors import BadInputError, NotFoundError, OperationalError

# isal's stub declares its error as an instance, not a class.
_GZIP_ERRORS: tuple[type[Exception], ...] = (isal_zlib.error,)  # type: ignore[assignment]

CHUNK = 1 << 20

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _is_zstd_skippable(head: bytes) -> bool:
    # Skippable frames have magic 0x184D2A50..0x184D2A5F, little-endian.
    return len(head) >= 4 and head[1:4] == b"\x2a\x4d\x18" and head[0] & 0xF0 == 0x50


# mallopt(3) parameters, and the values ``retain_freed_chunks`` sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_TRIM_AT, _MMAP_FROM, _ARENAS = 32 << 20, 4 << 20, 2
_retained = False


def retain_freed_chunks() -> None:
    """Have glibc's malloc keep freed chunks for reuse rather than give them back.

    Every decoded chunk is a new object of up to 1 MiB, made on the decoding
    thread and freed on the consumer's. With glibc's defaults the top of the
    heap goes back to the kernel as chunks are freed and is faulted in again
    for the next one: 65,000 to 84,000 page faults on a 570 MiB layer, against
    about 14,000 with these settings, at the same peak RSS (memory is kept
    only up to what was in use at once). Each malloc arena keeps its own
    freed chunks, and each decoding thread (two at once while the next layer
    decodes early) would get an arena: at most two arenas keep a 9 GiB stack
    of 24 layers at 74 MiB peak RSS, against 115 MiB with one per thread, at
    the same speed. It is a process-wide setting, so the command line makes
    it and the library leaves it to its caller. Elsewhere than glibc it does
    nothing.
    """
    global _retained
    if _retained:
        return
    _retained = True
    if os.uname().sysname != "Linux":  # other systems' mallopt numbers differ
        return
    import ctypes  # only here: 5 ms of start-up

    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_TRIM_THRESHOLD, _TRIM_AT)
        mallopt(_M_MMAP_THRESHOLD, _MMAP_FROM)
        mallopt(_M_ARENA_MAX, _ARENAS)


class Readable(Protocol):
    """Anything with ``read(n) -> bytes``."""

    def read(self, n: int = -1, /) -> bytes: ...


# A chunk for the hash thread, with the ``update`` of the hash it belongs to.
_HashItem = tuple[Callable[[bytes], None], bytes]


class _StoppedError(Exception):
    """The consumer went away (an error or a signal); the worker ends quietly."""


class _HashingReader:
    """Reads the raw source, hashing and counting every byte that passes.

    A pipe, FIFO or socket read directly by fd is waited on with ``poll`` in
    short slices, checking ``stopped``: otherwise a worker blocked on a
    writer that never closes would keep the process from exiting on SIGINT.
    """

    def __init__(self, source: Readable, stopped: Callable[[], bool] = lambda: False):
        self._source = source
        self._stopped = stopped
        self._poll: select.poll | None = None
        if isinstance(source, io.FileIO):  # unbuffered: nothing hides behind its fd
            mode = os.fstat(source.fileno()).st_mode
            if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode):
                self._poll = select.poll()
                self._poll.register(source.fileno(), select.POLLIN | select.POLLHUP)
        self.sha = hashlib.sha256()
        self.count = 0
        self._hand_off: Callable[[bytes], None] | None = None

    def hand_off(self, put: Callable[[bytes], None]) -> None:
        """From now on give what is read to ``put``, for another thread to hash
        into ``sha``, instead of hashing it on the reading thread."""
        self._hand_off = put

    def read(self, n: int = -1, /) -> bytes:
        if self._poll is not None:
            while not self._poll.poll(100):
                if self._stopped():
                    raise _StoppedError
        data = self._source.read(n)
        if data:
            if self._hand_off is None:
                self.sha.update(data)
            else:
                self._hand_off(data)
            self.count += len(data)
        return data


class _Pushback:
    """A reader with bytes put back in front of it (what the sniff read)."""

    def __init__(self, head: bytes, rest: Readable):
        self._head = head
        self._rest = rest

    def read(self, n: int = -1, /) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            return head
        return self._rest.read(n)


class _Buffered:
    """``readinto`` over a ``Readable``, for isal's reader.

    The bytes are read, then copied into the reader's buffer (not read into
    it): the blob's hash thread is handed each read as an object of its own,
    and the reader reuses its buffer.
    """

    def __init__(self, raw: Readable):
        self._raw = raw

    def readinto(self, buf: memoryview) -> int:
        data = self._raw.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def read(self, n: int = -1, /) -> bytes:  # isal's reader insists on the attribute
        return self._raw.read(n)


class _GzipReader:
    """Multi-member gzip with bounded output per call, through isal's C reader.

    ``isal`` decodes about twice as fast as ``zlib``, and its ``_GzipReader``
    (the one behind ``isal.igzip``) spares the two copies a ``decompressobj``
    makes per call (its unconsumed input, and its output buffer as it grows):
    10 % of the decoding time of a real-content layer. It decodes into one
    buffer, copied out once per chunk. Members are concatenated as gzip(1)
    allows; zero bytes after the last member are padding (GNU gzip accepts
    them too); anything else is an error, and a stream cut short is one.
    """

    def __init__(self, raw: Readable):
        # It calls only readinto (and checks that read exists).
        self._reader = isal_zlib._GzipReader(_Buffered(raw), CHUNK)  # type: ignore[arg-type]
        self._buffer = memoryview(bytearray(CHUNK))
        self._out = 0  # bytes decoded and returned
        self._failed: BadInputError | None = None

    def read(self, n: int = -1, /) -> bytes:
        if self._failed is not None:
            raise self._failed
        view = self._buffer[: CHUNK if n < 0 else min(n, CHUNK)]
        try:
            got: int = self._reader.readinto(view)
        except EOFError:
            # Also what a few bytes of garbage after the last member read as: a
            # member's header cut short. What was decoded before the end is in
            # the buffer (the reader counts it): it is handed over first, so
            # that the error comes up at the entry the stream was cut in. (Not
            # so for corrupt data: what came before the error may be wrong.)
            self._failed = BadInputError(
                "truncated gzip stream (ends inside a member or its header)"
            )
            got = self._reader.tell() - self._out
            if not got:
                raise self._failed from None
        except _GZIP_ERRORS as e:
            raise BadInputError(f"corrupt gzip data: {e}") from None
        except OSError as e:
            # isal raises gzip's BadGzipFile, an OSError, for a bad header, CRC or
            # length; matched by name, as importing gzip costs 2 ms of start-up.
            # The source's own OSErrors pass.
            if type(e).__name__ != "BadGzipFile":
                raise
            raise BadInputError(f"corrupt gzip data: {e}") from None
        self._out += got
        return bytes(view[:got])


class _ZstdFrames:
    """Follows zstd frame structure over the raw bytes, to catch truncation.

    ``stream_reader`` returns a clean end of data when its source ends
    inside a frame, so a cut layer would pass as a shorter one. This walks
    the frame and block headers (RFC 8878 section 3.1) as the bytes go by,
    skipping block contents, and at the end insists on a frame boundary.
    """

    def __init__(self, raw: Readable):
        self._raw = raw
        self._need = 4  # header bytes wanted before the next decision
        self._head = b""
        self._skip = 0  # content bytes to pass over
        self._state = "magic"
        self._checksum = False

    def read(self, n: int = -1, /) -> bytes:
        data = self._raw.read(n)
        if not data:
            if self._state != "magic" or self._head or self._skip:
                raise BadInputError("truncated zstd stream (ends inside a frame)")
            return data
        view = memoryview(data)
        while view:
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
                continue
            take = self._need - len(self._head)
            self._head += bytes(view[:take])
            view = view[take:]
            if len(self._head) == self._need:
                head, self._head = self._head, b""
                self._advance(head)
        return data

    def _advance(self, head: bytes) -> None:
        state = self._state
        if state == "magic":
            if head == ZSTD_MAGIC:
                self._state, self._need = "fhd", 1
            elif _is_zstd_skippable(head):
                self._state, self._need = "skippable", 4
            else:
                raise BadInputError("corrupt zstd data: unknown frame magic")
        elif state == "skippable":
            self._skip = int.from_bytes(head, "little")
            self._state, self._need = "magic", 4
        elif state == "fhd":
            fhd = head[0]
            single = fhd >> 5 & 1
            self._checksum = bool(fhd >> 2 & 1)
            rest = (0 if single else 1) + (0, 1, 2, 4)[fhd & 3]
            rest += (single, 2, 4, 8)[fhd >> 6]
            self._skip = rest
            self._state, self._need = "block", 3
        elif state == "block":
            header = int.from_bytes(head, "little")
            kind, size = header >> 1 & 3, header >> 3
            if kind == 3:
                raise BadInputError("corrupt zstd data: reserved block type")
            self._skip = 1 if kind == 1 else size
            if header & 1:  # last block of the frame
                self._skip += 4 if self._checksum else 0
                self._state, self._need = "magic", 4


class _ZstdReader:
    """zstd through ``stream_reader``, which reads every frame, skippable ones too."""

    def __init__(self, raw: Readable):
        import zstandard  # only here: 3 ms of start-up (it imports platform)

        self._error = zstandard.ZstdError
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            _ZstdFrames(raw),  # type: ignore[arg-type]  # it only calls read()
            read_size=CHUNK,
            read_across_frames=True,
        )

    def read(self, n: int = -1, /) -> bytes:
        try:
            return self._reader.read(CHUNK if n < 0 else n)
        except self._error as e:
            raise BadInputError(f"corrupt zstd data: {e}") from None


class LayerStream:
    """The uncompressed bytes of one layer, with its digests once drained.

    Use as a context manager. ``read(n)`` returns uncompressed bytes;
    ``finish()`` reads whatever is left (tar padding, trailing bytes) so that
    both digests cover the whole blob, and returns them.

    Reading, decompressing and hashing run on a worker thread, a few chunks
    ahead of the consumer: the decoders and hashlib release the GIL, so they
    overlap with the consumer's writes on the second core. A compressed
    layer's two hashes are computed on a thread of their own, so that the
    decoder, the longest single job on a big layer, has a core to itself. At
    most ``ahead`` decoded chunks (of ``CHUNK`` bytes) are in flight to the
    consumer, and as many chunks to the hash thread, so memory stays bounded.
    """

    AHEAD = 8

    def __init__(self, source: str | os.PathLike[str] | IO[bytes], ahead: int = AHEAD):
        self._owned: IO[bytes] | None = None
        if isinstance(source, (str, os.PathLike)):
            try:
                # Unbuffered: reads are 1 MiB anyway, and a FIFO can then be polled.
                self._owned = open(source, "rb", buffering=0)  # noqa: SIM115 (closed in close())
            except FileNotFoundError:
                raise NotFoundError(f"no such file: {os.fspath(source)}") from None
            except IsADirectoryError:
                raise BadInputError(f"is a directory, not a layer: {os.fspath(source)}") from None
            except OSError as e:
                raise OperationalError(f"cannot open {os.fspath(source)}: {e.strerror}") from None
            raw_source: Readable = self._owned
        else:
            raw_source = source
        self._stop = False
        self._raw = _HashingReader(raw_source, lambda: self._stop)
        head = self._read_head()
        if head.startswith(GZIP_MAGIC):
            self.compression = "gzip"
            self._reader: Readable = _GzipReader(_Pushback(head, self._raw))
        elif head.startswith(ZSTD_MAGIC) or _is_zstd_skippable(head):
            self.compression = "zstd"
            self._reader = _ZstdReader(_Pushback(head, self._raw))
        else:
            self.compression = "none"
            self._reader = _Pushback(head, self._raw)
        # For a plain tar the two digests are one; don't hash twice.
        self._tar_sha = None if self.compression == "none" else hashlib.sha256()
        self._hash_queue: queue.Queue[_HashItem | None] = queue.Queue(ahead)
        self._hasher: threading.Thread | None = None
        if self._tar_sha is not None:
            raw_update, put = self._raw.sha.update, self._hash_queue.put
            self._raw.hand_off(lambda data: put((raw_update, data)))
            self._hasher = threading.Thread(target=self._hash, name="layer-hash", daemon=True)
            self._hasher.start()
        self.uncompressed_size = 0
        self._chunk = b""
        self._pos = 0
        self._eof = False
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(ahead)
        self._worker = threading.Thread(target=self._pump, name="layer-decode", daemon=True)
        self._worker.start()

    def _read_head(self) -> bytes:
        head = b""
        while len(head) < 4:
            more = self._raw.read(4 - len(head))
            if not more:
                break
            head += more
        return head

    def _pump(self) -> None:
        """The worker: decode and hash chunk after chunk, then drain trailing bytes."""
        tar_update = self._tar_sha.update if self._tar_sha is not None else None
        try:
            while not self._stop:
                data = self._reader.read(CHUNK)
                if not data:
                    # Bytes after the compressed stream's end still count in the digest.
                    while self._raw.read(CHUNK):
                        pass
                    self._queue.put(None)
                    return
                self.uncompressed_size += len(data)
                if tar_update is not None:
                    self._hash_queue.put((tar_update, data))
                self._queue.put(data)
        except _StoppedError:
            return
        except BaseException as e:  # handed to the consumer, raised there
            self._queue.put(e)
        finally:
            if tar_update is not None:
                self._hash_queue.put(None)

    def _hash(self) -> None:
        """The hash thread: the worker hands over raw and decoded chunks, each
        with the ``update`` of the hash it belongs to."""
        while (item := self._hash_queue.get()) is not None:
            item[0](item[1])

    def read(self, n: int = -1, /) -> bytes:
        """Up to ``n`` uncompressed bytes; ``b""`` at the end."""
        if self._pos >= len(self._chunk):
            if self._eof:
                return b""
            item = self._queue.get()
            if item is None:
                self._eof = True
                return b""
            if isinstance(item, BaseException):
                self._eof = True
                raise item
            self._chunk, self._pos = item, 0
        chunk, pos = self._chunk, self._pos
        if n < 0 or n >= len(chunk) - pos:
            self._pos = len(chunk)
            return chunk if pos == 0 else chunk[pos:]
        self._pos = pos + n
        return chunk[pos : pos + n]

    @property
    def raw_bytes(self) -> int:
        """Bytes read from the source so far (for progress)."""
        return self._raw.count

    def finish(self) -> tuple[str, str]:
        """Drain the stream and return ``(digest, diff_id)`` as ``sha256:<hex>``."""
        while self.read(CHUNK):
            pass
        self._worker.join()
        if self._hasher is not None:
            self._hasher.join()
        digest = "sha256:" + self._raw.sha.hexdigest()
        diff_id = digest if self._tar_sha is None else "sha256:" + self._tar_sha.hexdigest()
        return digest, diff_id

    def close(self) -> None:
        """Stop the worker and close the file this stream opened (never a caller's stream)."""
        self._stop = True
        while self._worker.is_alive():
            try:  # make room so a blocked put() returns and the worker sees the flag
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        # The worker has ended and queued the hasher's end mark (``_pump``'s
        # finally), so the hasher drains its queue and ends.
        # Let go of the decoder's state (isal's reader holds two 1 MiB buffers)
        # and the last chunk: a closed stream may be kept while later layers
        # stream, and 24 kept layers held 58 MiB.
        self._reader = io.BytesIO()
        self._chunk = b""
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def __enter__(self) -> LayerStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
