"""A flattened rootfs tar with reproducible bytes: ``extractor export SOURCE OUT.tar``.

One tree always gives the same bytes, whatever its inode numbers, the order
its directories list their names in, or who runs the export:

* members in ``walk_tree`` order: the root ``./`` first, then depth first
  with each directory's names sorted bytewise (parents before children;
  paths compare as tuples of components, like ``tar --sort=name``); every
  name starts with ``./``, directories end with ``/``;
* POSIX pax (ustar headers, with a pax ``x`` header only for what ustar can't
  hold: long or non-ASCII names and link names, big ids, sizes or times, and
  xattrs as ``SCHILY.xattr.NAME`` records sorted by name); ``hdrcharset=BINARY``
  when a name is not UTF-8; no atime, ctime or pid anywhere;
* numeric owners only (uname and gname empty); the mode with setuid, setgid
  and sticky; mtimes in whole seconds (rounded down), clamped to
  ``SOURCE_DATE_EPOCH`` when it is given;
* a hardlink group's first name in that order is the file, each later name a
  type-1 member pointing at it; symlinks are symlinks, devices and FIFOs are
  kept; sockets are left out (tar can't hold them) and counted;
* two zero blocks, then zeros up to a multiple of 10240 bytes, as GNU tar.

Owners: a ``user.rootlesscontainers`` xattr (written by a rootless apply or
umoci) gives the real owner and is not exported itself. In rootless mode
(implied when not root) an entry without one belongs to the invoking user,
who stands for 0:0.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from .errors import (
    EXIT_USAGE,
    BadInputError,
    ExtractorError,
    NotFoundError,
    OperationalError,
)
from .paxwriter import TarWriter
from .treewalk import CHUNK, Record, TreeError, walk_tree

ROOTLESS_XATTR = "user.rootlesscontainers"
_TYPES = {
    "file": b"0",
    "symlink": b"2",
    "char": b"3",
    "block": b"4",
    "dir": b"5",
    "fifo": b"6",
}


@dataclass(frozen=True, slots=True)
class ExportOptions:
    """How a tree is exported.

    ``source_date_epoch`` clamps every mtime (seconds); ``rootless`` reads
    owners the rootless way (see the module docstring), and is forced on for a
    non-root user.
    """

    source_date_epoch: int | None = None
    rootless: bool = False


@dataclass(slots=True)
class ExportResult:
    """What an export wrote."""

    source: str
    out: str
    entries: int = 0
    size: int = 0  # bytes of the archive
    sha256: str = ""
    skipped: list[str] = field(default_factory=list)  # paths of sockets left out
    warnings: int = 0  # the unpack's warnings, for an image


def parse_rootless_owner(data: bytes) -> tuple[int, int]:
    """Decode a ``user.rootlesscontainers`` value: protobuf ``{uint32 uid = 1; uint32 gid = 2}``.

    Absent fields are 0; unknown fields are skipped; anything malformed is a
    ``ValueError``.
    """
    ids = {1: 0, 2: 0}
    pos = 0

    def varint() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            if pos >= len(data) or shift > 63:
                raise ValueError("truncated or oversized varint")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while pos < len(data):
        tag = varint()
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value = varint()
            if number in ids:
                ids[number] = value
        elif wire == 2:
            pos += varint()
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated field")
    if ids[1] > 0xFFFFFFFF or ids[2] > 0xFFFFFFFF:
        raise ValueError("id out of range")
    return ids[1], ids[2]


def parse_epoch(text: str, what: str = "SOURCE_DATE_EPOCH") -> int:
    """A ``SOURCE_DATE_EPOCH`` value: a non-negative integer number of seconds."""
    text = text.strip()
    if not text.isdigit():
        raise UsageError(f"{what} must be a non-negative integer, not {text!r}")
    return int(text)


class UsageError(ExtractorError):
    """A bad argument or environment value for ``export`` (exit status 2)."""

    exit_code = EXIT_USAGE


def _owner(record: Record, rootless: bool, me: tuple[int, int]) -> tuple[int, int]:
    for key, value in record.xattrs:
        if key == ROOTLESS_XATTR:
            try:
                return parse_rootless_owner(value)
            except ValueError as e:
                raise BadInputError(f"{record.path}: bad {ROOTLESS_XATTR} xattr: {e}") from None
    if rootless:
        return (0 if record.uid == me[0] else record.uid, 0 if record.gid == me[1] else record.gid)
    return record.uid, record.gid


def _member_name(path: str, kind: str) -> bytes:
    if path == ".":
        return b"./"
    return b"./" + os.fsencode(path) + (b"/" if kind == "dir" else b"")


def export_tree(
    root: str | os.PathLike[str],
    out: BinaryIO,
    options: ExportOptions | None = None,
    *,
    scratch: bool = False,
) -> ExportResult:
    """Write the tree at ``root`` to ``out`` as a reproducible tar; nothing in ``root`` changes.

    ``scratch`` says the tree is a private copy made for this export (an
    unpacked image): a file of ours that we may not read (mode 0000, as
    ``/etc/shadow`` in RHEL images, unpacked rootless) is then made readable
    for the moment of reading; its exported mode is the one it had.
    """
    options = options or ExportOptions()
    rootless = options.rootless or os.geteuid() != 0
    me = (os.geteuid(), os.getegid())
    epoch = options.source_date_epoch
    writer = TarWriter(out)
    result = ExportResult(source=os.fspath(root), out="")
    try:
        with walk_tree(root) as walker:
            for record in walker:
                typeflag = _TYPES.get(record.kind)
                if typeflag is None:
                    result.skipped.append(record.path)
                    continue
                uid, gid = _owner(record, rootless, me)
                mtime = record.mtime_ns // 1_000_000_000
                if epoch is not None and mtime > epoch:
                    mtime = epoch
                name = _member_name(record.path, record.kind)
                common: dict[str, Any] = {
                    "mode": record.mode,
                    "uid": uid,
                    "gid": gid,
                    "mtime": mtime,
                }
                if record.link is not None:
                    link = b"./" + os.fsencode(record.link)
                    writer.member(name, b"1", linkname=link, **common)
                else:
                    writer.member(
                        name,
                        typeflag,
                        size=record.size,
                        linkname=os.fsencode(record.target or ""),
                        device=record.device or (0, 0),
                        xattrs=[
                            (os.fsencode(k), v) for k, v in record.xattrs if k != ROOTLESS_XATTR
                        ],
                        **common,
                    )
                    if record.kind == "file":
                        _copy(record, writer, scratch)
                result.entries += 1
    except TreeError as e:
        raise OperationalError(e.message) from None
    writer.finish()
    result.size, result.sha256 = writer.size, "sha256:" + writer.digest.hexdigest()
    return result


def _open(record: Record, scratch: bool) -> int:
    try:
        return record.open()
    except PermissionError:
        if not scratch or record.uid != os.geteuid():
            raise
    handle = os.open(record.name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=record.dir_fd)
    try:
        st = os.fstat(handle)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (record.dev, record.ino):
            raise OperationalError(f"{record.path}: changed while exporting")
        magic = f"/proc/self/fd/{handle}"
        os.chmod(magic, record.mode | 0o400)
        try:
            return os.open(magic, os.O_RDONLY | os.O_CLOEXEC)
        finally:
            os.chmod(magic, record.mode)
    finally:
        os.close(handle)


def _copy(record: Record, writer: TarWriter, scratch: bool) -> None:
    try:
        fd = _open(record, scratch)
    except OSError as e:
        raise OperationalError(f"{record.path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (record.dev, record.ino):
            raise OperationalError(f"{record.path}: changed while exporting")
        left = record.size
        while left:
            try:
                chunk = os.read(fd, min(CHUNK, left))
            except OSError as e:
                raise OperationalError(f"{record.path}: {e.strerror or e}") from None
            if not chunk:
                raise OperationalError(f"{record.path}: shrank while exporting")
            writer.write(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    writer.pad(record.size)


def is_image(path: str) -> bool:
    """Whether ``path`` names an image rather than a rootfs directory.

    A file is an image (docker save or OCI archive, maybe compressed); a
    directory is one when it has an ``oci-layout`` file, or ``index.json``
    beside ``blobs/``.
    """
    if not os.path.isdir(path):
        return True
    join = os.path.join
    return os.path.isfile(join(path, "oci-layout")) or (
        os.path.isfile(join(path, "index.json")) and os.path.isdir(join(path, "blobs"))
    )


def export(
    source: str,
    out: str,
    options: ExportOptions | None = None,
    *,
    ref: str | None = None,
    platform: str | None = None,
) -> ExportResult:
    """Export ``source`` (a rootfs directory or an image) to the file ``out`` (``-``: stdout).

    An image is first unpacked (verified) into a private temporary directory
    beside ``out`` (for stdout: ``$TMPDIR``, else ``/dev/shm``), removed
    afterwards. A file ``out`` is written under a temporary name and renamed
    into place only when complete.
    """
    options = options or ExportOptions()
    if not os.path.lexists(source):
        raise NotFoundError(f"no such file or directory: {source}")
    if is_image(source):
        parent = _scratch_dir(out)
        tmp = tempfile.mkdtemp(prefix=".extractor-export-", dir=parent)
        try:
            rootfs = os.path.join(tmp, "rootfs")
            os.mkdir(rootfs, 0o755)
            os.chmod(rootfs, 0o755)  # whatever the umask: the root is a member too
            warnings = _unpack(source, rootfs, options, ref, platform)
            result = _export_to(rootfs, out, options, scratch=True)
            result.warnings = warnings
        finally:
            _remove_tree(tmp)
        result.source = source
        return result
    if out != "-":
        real = os.path.realpath(source)
        where = os.path.realpath(os.path.dirname(os.path.abspath(out)))
        if where == real or where.startswith(real.rstrip("/") + "/"):
            raise UsageError(f"{out} is inside {source}: the archive would contain itself")
    return _export_to(source, out, options)


def _unpack(
    source: str, rootfs: str, options: ExportOptions, ref: str | None, platform: str | None
) -> int:
    from .apply import ApplyOptions
    from .unpack import unpack_image

    done = unpack_image(
        source, rootfs, ref=ref, platform=platform, options=ApplyOptions(rootless=options.rootless)
    )
    return len(done.apply.warnings)


def _scratch_dir(out: str) -> str:
    if out != "-":
        return os.path.dirname(os.path.abspath(out))
    if os.environ.get("TMPDIR"):
        return os.environ["TMPDIR"]
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


def _export_to(root: str, out: str, options: ExportOptions, scratch: bool = False) -> ExportResult:
    tmp = None
    try:
        if out == "-":
            sink = sys.stdout.buffer
            result = export_tree(root, sink, options, scratch=scratch)
            sink.flush()
        else:
            tmp = f"{out}.tmp{os.getpid()}"
            with open(tmp, "wb", buffering=CHUNK) as f:
                result = export_tree(root, f, options, scratch=scratch)
            os.replace(tmp, out)
            tmp = None
    except OSError as e:  # reading errors are ExtractorErrors already: this is the output
        raise OperationalError(f"{out}: {e.strerror or e}") from None
    finally:
        if tmp is not None and os.path.lexists(tmp):
            os.unlink(tmp)
    result.out = out
    return result


def _remove_tree(path: str) -> None:
    def retry(func: Callable[..., Any], failed: str, exc: Any) -> None:
        # As non-root a read-only directory can't lose its children until it is writable.
        parent = os.path.dirname(failed)
        os.chmod(parent, stat.S_IMODE(os.lstat(parent).st_mode) | 0o700)
        func(failed)

    shutil.rmtree(path, onerror=retry)
