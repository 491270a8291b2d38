"""The reverse driver: newest layer first, as ggcr's ``mutate.Extract`` and kaniko before #326.

This order exists to reproduce and study a family of bugs, not to unpack
images for use: ``apply_layers`` (oldest first) is the correct algorithm.
Layers are streamed one at a time from the newest to the oldest, and a
``Hider`` remembers, by entry name, what the layers already applied (the
newer ones) settle:

- an entry is skipped when a newer layer wrote its path or whited it out, or
  when a newer layer whited out an ancestor, hid it with an opaque marker of
  an ancestor, or wrote an ancestor as a non-directory;
- whiteouts and opaque markers are recorded, never applied to the tree: they
  hide the lower layers' entries, and (as in chronological order) nothing the
  same layer writes;
- a hardlink is resolved against whatever the tree holds at that moment,
  exactly as ``Root.link`` does (the last component is not followed): when a
  newer layer replaced the target by a symlink, the link is a copy of that
  symlink, which is kaniko issue #282. A hardlink whose target is a
  directory at that moment, or is still missing at the end of its layer
  (a target listed later in the same layer is waited for, as oldest first),
  is skipped with a warning (``hardlink_target_not_a_file``,
  ``hardlink_target_missing``); so is every link to an older layer's file,
  which newest first is not there yet.

Within one layer the entries are applied in tar order with the chronological
driver's own rules (duplicates, links listed before their target), and every
write goes through ``rootfs.Root``, so the safety rules are the same. Names
are compared lexically, as ggcr compares them: a newer entry written through
a symlink does not hide an older entry that names the same file differently.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import logs
from .apply import (
    ApplyOptions,
    LayerApplier,
    LayerInput,
    LayerSource,
    applying,
    layer_name,
    log_warnings,
    open_root,
)
from .changeset import Action, classify
from .model import ApplyResult, Entry, Kind, LayerReport, Notice, ReadData
from .paths import ancestors
from .rootfs import Root
from .treemodel import Dir, MemRoot

if TYPE_CHECKING:
    from .explain import Conflict

Probe = Callable[[str], str | None]  # path -> "dir", "other" or None (nothing there)


@dataclass(frozen=True, slots=True)
class Hide:
    """Why newer layers hide a name: the layer (0-based) and what it put there.

    ``why`` is ``whiteout``, ``opaque``, or the kind of entry written
    (``file``, ``dir``, ``symlink``, ``hardlink``, ...).
    """

    layer: int
    why: str


class Hider:
    """What the newer layers settle, by entry name (ggcr's ``fileMap``).

    ``seen`` holds names a newer layer wrote or whited out; ``below`` holds
    names whose descendants are hidden: whiteouts, opaque directories and
    non-directories written by a newer layer. The current layer's own marks
    are staged and only take effect for the layers below it (``promote``).
    """

    def __init__(self) -> None:
        self.seen: dict[str, Hide] = {}
        self.below: dict[str, Hide] = {}
        # This layer: name -> the kind of its first non-directory entry, else ``dir``.
        self._written: dict[str, Kind] = {}
        self._whiteouts: list[str] = []
        self._opaque: list[str] = []

    def hidden(self, path: str) -> bool:
        """Whether a newer layer settled ``path``, so this layer's entry there is skipped."""
        return self.why(path) is not None

    def why(self, path: str) -> Hide | None:
        """What hides ``path``: its own mark, else the nearest hiding ancestor's."""
        hide = self.seen.get(path)
        if hide is not None:
            return hide
        for parent in reversed(ancestors(path)):
            hide = self.below.get(parent)
            if hide is not None:
                return hide
        return None

    def stage_write(self, path: str, kind: Kind) -> None:
        """This layer writes ``path``.

        A non-directory anywhere in the layer hides what lower layers have below
        the name, even if the layer makes it a directory again afterwards: oldest
        first, that entry removed them.
        """
        if self._written.get(path, Kind.DIR) is Kind.DIR:
            self._written[path] = kind

    def stage_whiteout(self, path: str) -> None:
        """This layer has a whiteout of ``path``."""
        self._whiteouts.append(path)

    def stage_opaque(self, path: str) -> None:
        """This layer has an opaque marker in directory ``path``."""
        self._opaque.append(path)

    def promote(self, layer: int) -> None:
        """The layer ``layer`` is done: its marks now hide the layers below."""
        for path in self._whiteouts:
            self.seen[path] = self.below[path] = Hide(layer, "whiteout")
        for path in self._opaque:
            self.below[path] = Hide(layer, "opaque")
        for path, kind in self._written.items():
            hide = Hide(layer, kind.value)
            self.seen[path] = hide
            if kind is not Kind.DIR:
                self.below[path] = hide
        self._written, self._whiteouts, self._opaque = {}, [], []


class ReverseLayerApplier(LayerApplier):
    """Applies one layer in reverse mode: the chronological rules plus the ``Hider``.

    ``record``, when given, receives every entry's header (for the conflict
    detector, so each layer is still read only once).
    """

    def __init__(
        self,
        root: Root,
        report: LayerReport,
        label: str,
        progress: logs.Progress | None,
        hider: Hider,
        probe: Probe,
        record: list[Entry] | None = None,
    ):
        super().__init__(root, report, label, progress)
        self.hider = hider
        self.probe = probe
        self.record = record

    def _apply(self, entry: Entry, read: ReadData) -> None:
        if self.record is not None:
            self.record.append(header_of(entry))
        decision = classify(entry)
        action = decision.action
        report = self.report
        if action is Action.WHITEOUT:
            report.whiteouts += 1
            self.hider.stage_whiteout(decision.target)
            return
        if action is Action.OPAQUE:
            report.opaque_dirs += 1
            self.hider.stage_opaque(decision.target)
            return
        if action is Action.SKIP:
            report.skipped += 1
            return
        if self.hider.hidden(entry.path):
            report.skipped += 1
            if self.debug:
                self.log.debug("entry_hidden", layer=report.index, path=entry.path)
            return
        if action is Action.WRITE:
            self.hider.stage_write(entry.path, entry.kind)
        super()._apply(entry, read)

    def _hardlink(self, path: str, target: str) -> None:
        if target not in self.state.unmade and self.probe(target) == "dir":
            self.state.drop_link(path)
            self.root.notify(
                "hardlink_target_not_a_file",
                path,
                f"{target} is a directory when the layers are applied newest first; not linked",
            )
            return
        super()._hardlink(path, target)

    def _end_of_layer(self) -> None:
        state = self.state
        for path in sorted(state.unmade):
            target = state.link_target[path]
            state.drop_link(path)
            self.root.notify(
                "hardlink_target_missing",
                path,
                f"{target} does not exist when the layers are applied newest first; not linked",
            )
        super()._end_of_layer()
        self.hider.promote(self.report.index)


def header_of(entry: Entry) -> Entry:
    """The parts of an entry's header the simulations need (no xattrs, no sparse map)."""
    return Entry(
        name=entry.name,
        path=entry.path,
        kind=entry.kind,
        mode=entry.mode,
        uid=entry.uid,
        gid=entry.gid,
        mtime_ns=0,
        size=entry.size,
        linkname=entry.linkname,
        devmajor=entry.devmajor,
        devminor=entry.devminor,
    )


def probe_root(root: Root) -> Probe:
    """What ``Root.link`` would find at a path: a directory, something else, or nothing."""

    def probe(path: str) -> str | None:
        head, _, name = path.rpartition("/")
        if not name:
            return None
        try:
            fd, _ = root.walk(head, create=False)
        except FileNotFoundError:
            return None
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        finally:
            os.close(fd)
        return "dir" if stat.S_ISDIR(st.st_mode) else "other"

    return probe


def probe_memory(root: MemRoot) -> Probe:
    """``probe_root`` for the in-memory tree."""

    def probe(path: str) -> str | None:
        if not path:
            return None
        node = root.lookup(path)
        if node is None:
            return None
        return "dir" if isinstance(node, Dir) else "other"

    return probe


# Not slots=True: that remakes the class, which a compiled base (``model``) refuses.
@dataclass
class ReverseResult(ApplyResult):
    """An ``ApplyResult`` of a reverse apply, plus where the order made a difference.

    ``layers`` are listed oldest first, like a chronological apply's, though
    they were applied newest first. ``conflicts`` is ``None`` until computed.
    """

    order: str = "reverse"
    conflicts: list[Conflict] | None = None


def apply_layers_reverse(
    dest: str | os.PathLike[str],
    layers: Sequence[LayerSource | LayerInput],
    options: ApplyOptions | None = None,
    detect: bool = True,
) -> ReverseResult:
    """Apply layer tarballs newest first, skipping what newer layers settled, onto ``dest``.

    Takes what ``apply_layers`` takes; each layer is read once. With
    ``detect``, the headers are kept in memory and, at the end, the conflict
    detector lists every path where this order and the chronological one give
    different trees (``result.conflicts``). Raises an ``ExtractorError`` on
    bad input or a failed write; nothing outside ``dest`` is touched.
    """
    options = options or ApplyOptions()
    dest = os.fspath(dest)
    started = time.monotonic()
    result = ReverseResult(dest=dest)
    log = logs.get_logger()
    current: list[LayerReport] = []

    def notify(event: str, path: str, detail: str) -> None:
        report = current[-1]
        result.warnings.append(Notice(report.index, path, event, detail))
        report.warnings += 1

    root = open_root(dest, options, notify)
    result.rootless = not root.privileged
    hider = Hider()
    probe = probe_root(root)
    stack: list[list[Entry]] = [[] for _ in layers]
    try:
        with applying(root, result, options, started):
            for index in reversed(range(len(layers))):
                item = layers[index]
                layer = item if isinstance(item, LayerInput) else LayerInput(item)
                name = layer_name(layer)
                report = LayerReport(index=index, source=name)
                result.layers.append(report)
                current.append(report)
                label = f"{index + 1}/{len(layers)} ({name})"
                record = stack[index] if detect else None
                applier = ReverseLayerApplier(
                    root, report, label, options.progress, hider, probe, record
                )
                applier.run(layer, options.verify, options.limits)
                log.info(
                    "layer_applied",
                    layer=index,
                    order="reverse",
                    digest=report.digest,
                    diff_id=report.diff_id,
                    entries=report.entries,
                    skipped=report.skipped,
                    seconds=round(report.seconds, 3),
                )
    finally:
        result.layers.sort(key=lambda r: r.index)  # reported oldest first
    if detect:
        from .conflicts import detect_stack

        result.conflicts = detect_stack(
            stack,
            [r.source for r in result.layers],
            privileged=root.privileged,
            keep_dirlinks=options.keep_dirlinks,
            tolerate=True,
        )
    result.seconds = time.monotonic() - started
    log_warnings(result, log)
    return result
