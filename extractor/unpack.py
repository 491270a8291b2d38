"""Unpack a whole image: open it, then apply its layers in manifest order, verified.

Verification happens while each layer streams: the blob's sha256 and size
against its descriptor, and the uncompressed tar's sha256 against the
config's DiffID. A mismatch is only known at the end of a layer, after it
changed the tree, so a failed unpack removes what it wrote: a directory
that was missing or empty before is left missing or empty again. Only with
``force`` onto a non-empty directory is a partial tree left behind (and the
error says so).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from typing import Any

from . import logs
from .apply import ApplyOptions, LayerInput, apply_layers
from .errors import ExtractorError, OperationalError
from .images import Image, open_image
from .model import ApplyResult


@dataclass(slots=True)
class UnpackResult:
    """What an unpack did: which image it chose, and the apply's report."""

    image: dict[str, Any]
    apply: ApplyResult


def image_summary(image: Image) -> dict[str, Any]:
    """The identifying facts of a chosen image, for reports and summaries."""
    return {
        "source": image.source,
        "format": image.format,
        "ref": image.ref,
        "platform": image.platform,
        "manifest": image.manifest_digest,
        "config": image.config_digest,
        "layers": len(image.layers),
    }


def layer_inputs(image: Image) -> list[LayerInput]:
    """The image's layers as engine inputs, each opened only when its turn comes."""
    return [
        LayerInput(
            source=layer.open,
            name=layer.name,
            digest=layer.digest,
            size=layer.size,
            diff_id=layer.diff_id,
            concurrent=image.concurrent_layers,
        )
        for layer in image.layers
    ]


def _is_empty_dir(path: str) -> bool | None:
    """True if an empty directory, False if a non-empty one, None if missing."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        raise OperationalError(f"{path} exists and is not a directory")
    with os.scandir(path) as it:
        return next(it, None) is None


def unpack_image(
    image_path: str,
    dest: str,
    *,
    ref: str | None = None,
    platform: str | None = None,
    force: bool = False,
    atomic: bool = False,
    options: ApplyOptions | None = None,
    order: str = "chronological",
) -> UnpackResult:
    """Unpack the image at ``image_path`` into ``dest``.

    ``dest`` must be missing or empty unless ``force``. On failure, what
    the unpack wrote is removed (see the module docstring) and the error is
    raised. With ``atomic`` the tree is built in a temporary sibling of
    ``dest`` and put in its place only once complete, so a failure leaves
    ``dest`` exactly as it was, even with ``force``. ``order="reverse"`` applies
    the layers newest first (``reverse.apply_layers_reverse``).
    """
    state = _is_empty_dir(dest)
    if state is False and not force:
        raise OperationalError(f"{dest} is not empty (use --force to unpack over it)")
    options = options or ApplyOptions()
    with open_image(image_path, ref=ref, platform=platform, verify=options.verify) as image:
        summary = image_summary(image)
        for warning in image.warnings:
            logs.get_logger().warning("image_warning", image=image_path, detail=warning)
        target = _sibling(dest) if atomic else dest
        try:
            if order != "reverse":
                result = apply_layers(target, layer_inputs(image), options)
            else:
                from .reverse import apply_layers_reverse

                result = apply_layers_reverse(target, layer_inputs(image), options)
        except BaseException as e:
            if atomic:
                _remove_tree(target)
            elif state is None:
                _remove_tree(dest)
            elif state is True:
                _empty_dir(dest)
            elif isinstance(e, ExtractorError):
                e.message += f" ({dest} holds a partial tree)"
            raise
    if atomic:
        _put_in_place(target, dest, state)
        result.dest = dest
    return UnpackResult(image=summary, apply=result)


def _sibling(dest: str) -> str:
    """A new private directory next to ``dest``, on the same filesystem, for --atomic."""
    parent, name = os.path.split(os.path.abspath(dest))
    path = tempfile.mkdtemp(prefix=f".{name}.extractor-", dir=parent)
    os.chmod(path, 0o755)
    return path


def _put_in_place(built: str, dest: str, state: bool | None) -> None:
    """Move a complete tree to ``dest``; an old non-empty ``dest`` is swapped out, then removed."""
    try:
        if state is None:
            os.rename(built, dest)
        elif state is True:
            os.rmdir(dest)
            os.rename(built, dest)
        else:
            _exchange(built, dest)
            _remove_tree(built)  # now holds the old tree
    except OSError as e:
        _remove_tree(built)
        raise OperationalError(f"cannot move the unpacked tree into {dest}: {e.strerror}") from None


def _exchange(a: str, b: str) -> None:
    """renameat2(RENAME_EXCHANGE): swap two paths in one step (Linux 3.15+)."""
    libc = ctypes.CDLL(None, use_errno=True)
    rename_exchange = 2
    at_fdcwd = -100
    if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _make_writable_and_retry(func: Any, path: str, exc: Any) -> None:
    # As non-root a read-only directory can't lose its children until it is writable.
    parent = os.path.dirname(path)
    os.chmod(parent, stat.S_IMODE(os.lstat(parent).st_mode) | 0o700)
    func(path)


def _remove_tree(path: str) -> None:
    shutil.rmtree(path, onerror=_make_writable_and_retry)


def _empty_dir(path: str) -> None:
    with os.scandir(path) as it:
        names = [e.name for e in it]
    for name in names:
        child = os.path.join(path, name)
        if os.path.isdir(child) and not os.path.islink(child):
            _remove_tree(child)
        else:
            os.unlink(child)
