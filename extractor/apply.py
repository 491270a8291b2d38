"""The chronological driver: layers → entries → decisions → writes, with a report.

Layers are applied oldest first, each streamed once. For every entry the
rules (``changeset``) decide what it means and the root (``rootfs``) does it.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable, Container, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from mypy_extensions import mypyc_attr

from . import logs
from .changeset import PLNK_DIR, Action, LayerState, classify
from .decode import LayerStream
from .errors import BadInputError, ExtractorError, FailedWriteError, OperationalError
from .limits import Limits
from .model import (
    DIR,
    FILE,
    HARDLINK,
    SYMLINK,
    ApplyResult,
    Entry,
    Kind,
    LayerReport,
    Notice,
    ReadData,
)
from .rootfs import IdMap, Root, RootOptions
from .tarstream import TarReader

LayerSource = str | os.PathLike[str] | IO[bytes]

# As plain globals, for the same reason as model.FILE and its kin.
_WRITE, _WHITEOUT, _OPAQUE, _SKIP = Action.WRITE, Action.WHITEOUT, Action.OPAQUE, Action.SKIP

# A helper process costs a fork (4 ms here, 20 ms from a process of 400 MB):
# layers smaller than this (compressed) are not worth one.
HELPER_MIN_BYTES = 1 << 20

# Chunks the next layer may decode ahead while the one before it streams. Its
# decoding then uses the core the current layer leaves idle: a stack of layers
# of big files is bound by decoding, one layer at a time, on one core.
EARLY_AHEAD = 12

# errno values that say the input, not the machine, is at fault.
_INPUT_ERRNOS = {errno.ENAMETOOLONG, errno.EMLINK}


@dataclass(frozen=True, slots=True)
class LayerInput:
    """A layer plus what it is expected to be, checked as it streams.

    ``source`` is a path, a binary stream, or a function that opens one (so
    an image's layers are opened in their turn, or one layer early where
    ``concurrent`` allows: see ``may_open_early``). ``digest`` and ``size`` are
    the blob's as a descriptor names them; ``diff_id`` is the sha256 of the
    uncompressed tar, as an image config lists it. ``None`` means unchecked.
    """

    source: LayerSource | Callable[[], IO[bytes]]
    name: str | None = None
    digest: str | None = None
    size: int | None = None
    diff_id: str | None = None
    # Whether a function ``source`` opens files of its own, so that this layer
    # may be opened and decoded while the one before it still streams (a path
    # to a regular file always may; a stream never does).
    concurrent: bool = False


class OpenLayer:
    """A layer's source, opened, with its ``LayerStream`` decoding from the start."""

    def __init__(self, layer: LayerInput, ahead: int):
        source = layer.source
        file: IO[bytes] | None = None
        if callable(source):
            source = file = source()
        try:
            self.stream = LayerStream(source, ahead)
        except BaseException:
            if file is not None:
                file.close()
            raise
        self._file = file

    def close(self) -> None:
        """Stop decoding and close what this opened (never a caller's stream)."""
        try:
            self.stream.close()
        finally:
            if self._file is not None:
                self._file.close()
                self._file = None


# A layer opened, or what opening it raised (raised in turn, when its turn comes).
Opened = OpenLayer | ExtractorError | OSError | None


def open_layer(layer: LayerInput, ahead: int) -> Opened:
    """``layer`` opened, or the error that opening it gave."""
    try:
        return OpenLayer(layer, ahead)
    except (ExtractorError, OSError) as e:
        return e


def may_open_early(layer: LayerInput) -> bool:
    """Whether ``layer`` may be opened while an earlier one streams: only files
    that each open reads independently (a FIFO must wait for its turn)."""
    source = layer.source
    if callable(source):
        return layer.concurrent
    if not isinstance(source, (str, os.PathLike)):
        return False
    try:
        return stat.S_ISREG(os.stat(source).st_mode)
    except (OSError, ValueError):
        return False


@dataclass(frozen=True, slots=True)
class ApplyOptions:
    """Options of an apply. ``rootless`` is implied when not running as root."""

    rootless: bool = False
    uid_maps: tuple[IdMap, ...] = ()
    gid_maps: tuple[IdMap, ...] = ()
    keep_dirlinks: bool = False
    verify: bool = True  # check LayerInput digests, sizes and DiffIDs
    limits: Limits = field(default_factory=Limits)
    progress: logs.Progress | None = None
    # Processes that write the tree: 1, or 2 and more for a helper process that
    # creates the regular files (``writebehind``); ``None``: 2 when any layer is
    # HELPER_MIN_BYTES or more (or of unknown size) on a machine with 2+ CPUs.
    jobs: int | None = None


def wants_helper(jobs: int | None, size: int | None) -> bool:
    """Whether a layer of ``size`` bytes (``None``: unknown) gets a helper process."""
    if jobs is not None:
        return jobs > 1
    return len(os.sched_getaffinity(0)) > 1 and (size is None or size >= HELPER_MIN_BYTES)


def layer_name(layer: LayerInput) -> str:
    """The name a layer goes by in messages and reports: given, its path, or its stream's."""
    if layer.name is not None:
        return layer.name
    source = layer.source
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return str(getattr(source, "name", "<stream>"))


def apply_layers(
    dest: str | os.PathLike[str],
    layers: Sequence[LayerSource | LayerInput],
    options: ApplyOptions | None = None,
) -> ApplyResult:
    """Apply layer tarballs, oldest first, onto the directory ``dest``.

    Each layer is a path or a binary stream holding a plain, gzip or zstd tar
    (detected from its magic bytes), or a ``LayerInput`` that also names the
    digests to verify. ``dest`` is created if missing; an existing tree is
    updated in place. Raises an ``ExtractorError`` subclass on bad input or a
    failed write; nothing outside ``dest`` is touched.
    """
    options = options or ApplyOptions()
    dest = os.fspath(dest)
    started = time.monotonic()
    result = ApplyResult(dest=dest)
    log = logs.get_logger()
    root = open_root(dest, options, notifier(result))
    result.rootless = not root.privileged
    inputs = [item if isinstance(item, LayerInput) else LayerInput(item) for item in layers]
    if any(wants_helper(options.jobs, x.size or _known_size(x.source)) for x in inputs):
        root.start_helper()  # now, while no thread runs: it forks
    early: Opened = None  # the next layer, opened while the one before streams
    with applying(root, result, options, started):
        try:
            for index, layer in enumerate(inputs):
                current = early if early is not None else open_layer(layer, LayerStream.AHEAD)
                early = None
                if index + 1 < len(inputs) and may_open_early(inputs[index + 1]):
                    early = open_layer(inputs[index + 1], EARLY_AHEAD)
                name = layer_name(layer)
                report = LayerReport(index=index, source=name)
                result.layers.append(report)
                label = f"{index + 1}/{len(layers)} ({name})"
                LayerApplier(root, report, label, options.progress).run(
                    layer, options.verify, options.limits, opened=current
                )
                log.info(
                    "layer_applied",
                    layer=index,
                    digest=report.digest,
                    diff_id=report.diff_id,
                    entries=report.entries,
                    seconds=round(report.seconds, 3),
                )
        finally:
            if isinstance(early, OpenLayer):
                early.close()
    result.seconds = time.monotonic() - started
    log_warnings(result, log)
    return result


def open_root(dest: str, options: ApplyOptions, notify: Callable[[str, str, str], None]) -> Root:
    """The ``Root`` an apply writes through, with the options' ownership policy."""
    try:
        return Root(
            dest,
            RootOptions(
                options.rootless,
                options.uid_maps,
                options.gid_maps,
                options.keep_dirlinks,
                options.limits.symlinks,
            ),
            notify,
        )
    except OSError as e:
        raise OperationalError(f"cannot open {dest}: {e.strerror}") from None


@contextmanager
def applying(
    root: Root, result: ApplyResult, options: ApplyOptions, started: float
) -> Iterator[None]:
    """Around a driver's layer loop: finish the root's directories when the loop
    completes, attach what was done to a failure (for ``--report``), and
    always release the root and the progress line."""
    try:
        yield
        try:
            root.finish()
        except OSError as e:
            raise OperationalError(f"setting directory metadata: {e.strerror}") from None
    except ExtractorError as e:
        result.seconds = time.monotonic() - started
        e.partial = result
        raise
    finally:
        root.close()
        if options.progress is not None:
            options.progress.close()


def notifier(result: ApplyResult) -> Callable[[str, str, str], None]:
    """A callback that records the root's warnings against the current layer."""

    def notify(event: str, path: str, detail: str) -> None:
        layer = len(result.layers) - 1
        result.warnings.append(Notice(layer, path, event, detail))
        result.layers[layer].warnings += 1

    return notify


def log_warnings(result: ApplyResult, log: Any) -> None:
    """Log one line per kind of tolerated loss, with a count, not thousands of lines."""
    counts: dict[str, int] = {}
    for notice in result.warnings:
        counts[notice.event] = counts.get(notice.event, 0) + 1
    for event, count in counts.items():
        example = next(n for n in result.warnings if n.event == event)
        log.warning(event, count=count, example=example.path, detail=example.detail)


class Tree(Protocol):
    """What ``LayerApplier`` asks of a tree: ``rootfs.Root``, or ``treemodel.MemRoot``
    for the conflict detector's simulations."""

    def start_helper(self) -> None: ...
    def settle(self) -> None: ...
    def notify(self, event: str, path: str, detail: str) -> None: ...
    def write(self, entry: Entry, read: ReadData) -> str | None: ...
    def link(self, entry: Entry, target_path: str) -> str | None: ...
    def remove(self, path: str, keep: Container[str]) -> str | None: ...
    def clear_dir(self, path: str, keep: Container[str]) -> str: ...


@mypyc_attr(allow_interpreted_subclasses=True)  # reverse.ReverseLayerApplier
class LayerApplier:
    """Applies one layer's entries, in tar order, and fills its report."""

    def __init__(self, root: Tree, report: LayerReport, label: str, progress: logs.Progress | None):
        self.root = root
        self.report = report
        self.label = label
        self.state = LayerState()
        self.progress = progress
        self.debug = logs.debug_enabled()
        self.log = logs.get_logger()
        self.plnk = False
        self.remaking: set[str] = set()
        self.links_left = Limits().hardlinks  # hardlinks this layer may still make

    def run(
        self,
        layer: LayerInput,
        verify: bool,
        limits: Limits | None = None,
        jobs: int | None = 1,
        opened: Opened = None,
    ) -> None:
        """Stream ``layer`` onto the root, within ``limits``, with a helper process
        as ``jobs`` says (``ApplyOptions.jobs``); raises ``ExtractorError``.

        ``opened`` is the layer as ``open_layer`` opened it earlier; a caller
        that passes it has started any helper itself (``jobs`` is then unused).
        """
        limits = limits or Limits()
        self.links_left = limits.hardlinks
        started = time.monotonic()
        tar: TarReader | None = None  # names the entry at hand, for errors
        size = layer.size or _known_size(layer.source)
        try:
            if opened is None:
                if wants_helper(jobs, size):
                    self.root.start_helper()  # before this layer's threads start: it forks
                opened = open_layer(layer, LayerStream.AHEAD)
            if not isinstance(opened, OpenLayer):
                assert opened is not None
                raise opened
            with closing(opened):
                stream = opened.stream
                report = self.report
                report.compression = stream.compression
                tar = TarReader(stream, limits)
                if self.progress is not None:
                    self.progress.start(self.label, size or 0)
                while (entry := tar.next()) is not None:
                    report.entries += 1
                    if self.debug:
                        self.log.debug(
                            "entry", layer=report.index, path=entry.path, kind=entry.kind.value
                        )
                    self._apply(entry, tar.read_data)
                    if self.progress is not None:
                        self.progress.update(stream.raw_bytes)
                tar = None
                self._end_of_layer()
                report.digest, report.diff_id = stream.finish()
                report.size = stream.raw_bytes
                report.uncompressed_size = stream.uncompressed_size
                if verify:
                    _verify(layer, report)
        except (ExtractorError, OSError) as e:
            error: ExtractorError | OSError = e
            try:
                # What was sent to the helper came before the failure: make it, as
                # one process would have. If it fails there, that failure was first.
                self.root.settle()
            except FailedWriteError as earlier:
                error = earlier
            except (ExtractorError, OSError):
                pass
            raise self._failure(error, tar.current if tar is not None else None) from None
        self.report.seconds = time.monotonic() - started

    def _failure(self, e: ExtractorError | OSError, entry: str | None) -> ExtractorError:
        """``e`` as the error it is, naming this layer and the entry at fault."""
        if isinstance(e, ExtractorError):
            return e.with_context(layer=self.label, entry=entry)
        if isinstance(e, FailedWriteError):
            entry = e.entry  # the helper's file, not the entry at hand
        cls = BadInputError if e.errno in _INPUT_ERRNOS else OperationalError
        return cls(e.strerror or str(e), layer=self.label, entry=entry)

    def _apply(self, entry: Entry, read: ReadData) -> None:
        decision = classify(entry)
        state, report, root = self.state, self.report, self.root
        action = decision.action
        if action is not _WRITE:
            if action is _WHITEOUT:
                report.whiteouts += 1
                root.remove(decision.target, state.upper)
                return
            if action is _OPAQUE:
                report.opaque_dirs += 1
                state.wrote(root.clear_dir(decision.target, state.upper))
                return
            if action is _SKIP:
                report.skipped += 1
                return
            self.plnk = True  # AUFS link store: written now, linked to, removed at the end
        if not state.first_time(entry.path):
            report.duplicates += 1
            root.notify("duplicate_entry", entry.path, "listed twice in one layer; last wins")
        if state.link_target:
            state.drop_link(entry.path)
        if entry.kind is HARDLINK:
            report.hardlinks += 1
            self._hardlink(entry.path, entry.linkname)
            return
        physical = root.write(entry, read)
        if physical is None:
            report.skipped += 1
            return
        state.wrote(physical)
        self._count(entry)
        if entry.path in state.links_to:
            self._remake_links(entry.path)

    def _count(self, entry: Entry) -> None:
        report = self.report
        kind = entry.kind
        if kind is FILE:
            report.files += 1
            report.bytes += entry.size
        elif kind is DIR:
            report.dirs += 1
        elif kind is SYMLINK:
            report.symlinks += 1
        else:
            report.specials += 1

    def _hardlink(self, path: str, target: str) -> None:
        state = self.state
        if target in state.unmade:
            # Its target is itself a link still waiting: wait behind it.
            state.add_link(path, target, made=False)
            return
        self.links_left -= 1
        if self.links_left < 0:
            raise BadInputError(
                "more hardlinks made in one layer than the limit (--max-hardlinks)", entry=path
            )
        link = Entry(
            name=path,
            path=path,
            kind=Kind.HARDLINK,
            mode=0,
            uid=0,
            gid=0,
            mtime_ns=0,
            linkname=target,
        )
        physical = self.root.link(link, target)
        state.add_link(path, target, made=physical is not None)
        if physical is None:
            return
        state.wrote(physical)
        if path in state.links_to:
            self._remake_links(path)

    def _remake_links(self, target: str) -> None:
        # Links may point at each other (a -> b, b -> a): remake each group once.
        if target in self.remaking:
            return
        self.remaking.add(target)
        try:
            for path in self.state.links_of(target):
                if path != target:
                    self._hardlink(path, target)
        finally:
            self.remaking.discard(target)

    def _end_of_layer(self) -> None:
        self.root.settle()  # the layer's files are all made, or its failure is its own
        if self.state.unmade:
            path = min(self.state.unmade)
            target = self.state.link_target[path]
            raise BadInputError(f"hardlink target does not exist: {target}", entry=path)
        if self.plnk:
            self.root.remove(PLNK_DIR, set())


def _verify(layer: LayerInput, report: LayerReport) -> None:
    """Compare what streamed by with what the image said; any difference is fatal."""
    if layer.size is not None and layer.size != report.size:
        raise BadInputError(
            f"size mismatch: the manifest says {layer.size} bytes, the blob has {report.size}"
        )
    for what, expected, got in (
        ("digest", layer.digest, report.digest),
        ("DiffID", layer.diff_id, report.diff_id),
    ):
        if expected is None:
            continue
        if not expected.startswith("sha256:"):
            raise BadInputError(f"cannot verify {what} {expected}: only sha256 is supported")
        if expected != got:
            raise BadInputError(f"{what} mismatch: expected {expected}, got {got}")
    report.verified = True


def _known_size(source: LayerSource | Callable[[], IO[bytes]]) -> int | None:
    """The layer's size in bytes if a stat or a seek tells it; ``None`` for a pipe."""
    if callable(source):
        return None
    try:
        if isinstance(source, (str, os.PathLike)):
            st = os.stat(source)
        else:
            try:
                st = os.fstat(source.fileno())
            except (OSError, ValueError, AttributeError):
                if not source.seekable():
                    return None
                here = source.tell()
                end = source.seek(0, os.SEEK_END)
                source.seek(here)
                return end - here
        return st.st_size if stat.S_ISREG(st.st_mode) else None
    except (OSError, ValueError, AttributeError):
        return None
