"""Extended attributes through the ``xattr`` package, on fds or on symlinks by name.

Symlinks have no fd to act on, so they are named as
``/proc/self/fd/<parent fd>/<name>`` with ``XATTR_NOFOLLOW``: the kernel
resolves the magic link to the already-confined parent directory and does not
follow the final component.
"""

from __future__ import annotations

import errno

import xattr

# Errors that mean "this filesystem or this user can't have that xattr": the
# apply goes on and counts a warning. Anything else (ENOSPC, EIO) is fatal.
TOLERATED = frozenset(
    {
        errno.EPERM,
        errno.EACCES,
        errno.ENOTSUP,
        errno.EOPNOTSUPP,
        errno.E2BIG,
        errno.ERANGE,
        errno.EINVAL,
    }
)


def link_name(parent_fd: int, name: str) -> str:
    """A name for ``name`` inside the directory ``parent_fd`` that needs no fd of its own."""
    return f"/proc/self/fd/{parent_fd}/{name}"


def set_on_fd(fd: int, name: str, value: bytes) -> None:
    """Set one xattr on an open file or directory."""
    xattr.setxattr(fd, name, value)


def set_on_link(parent_fd: int, name: str, key: str, value: bytes) -> None:
    """Set one xattr on the symlink (or special file) ``name`` without following it."""
    xattr.setxattr(link_name(parent_fd, name), key, value, symlink=True)


def list_on_fd(fd: int) -> list[str]:
    """The xattr names an open file or directory has."""
    return list(xattr.listxattr(fd))


def remove_on_fd(fd: int, name: str) -> None:
    """Remove one xattr from an open file or directory."""
    xattr.removexattr(fd, name)


def has_default_acl(dir_fd: int) -> bool:
    """Whether a directory (any fd, ``O_PATH`` too) may give new files a default ACL.

    True when that cannot be told (no ``/proc``): callers then do the work an
    ACL would make necessary.
    """
    try:
        xattr.getxattr(f"/proc/self/fd/{dir_fd}", "system.posix_acl_default")
    except OSError as e:
        return e.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP)
    return True


def rootless_owner_record(uid: int, gid: int) -> bytes:
    """The ``user.rootlesscontainers`` value umoci writes for an owner it could not set.

    It is the protobuf ``Resource {uint32 uid = 1; uint32 gid = 2;}``; an id of
    0 is left out, as protobuf leaves out default values.
    """
    out = bytearray()
    for tag, value in ((0x08, uid), (0x10, gid)):
        if value:
            out.append(tag)
            while True:
                byte = value & 0x7F
                value >>= 7
                if value:
                    out.append(byte | 0x80)
                else:
                    out.append(byte)
                    break
    return bytes(out)
