"""Tars from compact entry lists, shared by the testdata generators.

An entry is ``(kind, name, payload, mode)`` with kind ``dir``, ``file``
(payload: the bytes), ``symlink`` or ``hardlink`` (payload: the target).
Owners are 0:0 with no names and every mtime is ``mtime``, so the bytes
are reproducible.
"""

from __future__ import annotations

import io
import tarfile

Spec = tuple[str, str, object, int]  # kind, name, payload, mode


def spec_tar(entries: list[Spec], mtime: int, go_style: bool = False) -> bytes:
    """A PAX tar of ``entries``; ``go_style`` ends it as Go's archive/tar (docker)
    does, after the two zero blocks, without padding to a 10 KiB record."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for kind, name, payload, mode in entries:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode, info.uname, info.gname = mtime, mode, "", ""
            data = None
            if kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "file":
                assert isinstance(payload, bytes)
                info.size, data = len(payload), io.BytesIO(payload)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, str(payload)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, str(payload)
            tf.addfile(info, data)
        end = tf.offset + 2 * tarfile.BLOCKSIZE
    raw = buf.getvalue()
    return raw[:end] if go_style else raw
