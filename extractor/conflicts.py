"""The conflict detector: where applying layers newest first gives a different tree.

The stack is read once, headers only (nothing is extracted, nothing is
written). Then both orders are simulated in memory on ``treemodel.MemRoot``,
by the engine's own drivers: the chronological one (``apply``) and the
reverse one (``reverse``), so the simulations follow exactly the rules the
real applies follow, same-layer order included. The two final trees are
compared path by path: type, symlink target, content identity (which layer's
entry the bytes come from) and hardlink grouping. Every path that differs is
a ``Conflict``, with a kind, the layers involved and one sentence.

The comparison and the kinds of conflict are in ``explain``.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from typing import Any, cast

from .apply import LayerApplier, LayerInput, LayerSource, layer_name
from .decode import LayerStream
from .errors import BadInputError, ExtractorError, OperationalError
from .explain import Conflict, LinkEvent, Trace, compare
from .limits import Limits
from .model import Entry, LayerReport, ReadData
from .reverse import Hider, ReverseLayerApplier, header_of, probe_memory
from .rootfs import Root
from .tarstream import TarReader
from .treemodel import MemRoot, Origin

__all__ = [
    "SCHEMA",
    "Conflict",
    "detect",
    "detect_stack",
    "document",
    "image_stack",
    "read_stack",
    "render",
]

SCHEMA = "extractor.conflicts/v1"
Stack = Sequence[Sequence[Entry]]


def document(conflicts: Iterable[Conflict]) -> dict[str, Any]:
    """The ``--json`` document (schema ``extractor.conflicts/v1``)."""
    return {"schema": SCHEMA, "conflicts": [c.as_dict() for c in conflicts]}


# -- reading ------------------------------------------------------------------


def read_stack(
    layers: Sequence[LayerSource | LayerInput], limits: Limits | None = None
) -> tuple[list[list[Entry]], list[str]]:
    """Every layer's entry headers (no data kept) and the layers' names, oldest first.

    All headers are held at once, so ``limits`` (paths, headers, entries per
    layer) bound the memory this takes as they bound an apply's.
    """
    limits = limits or Limits()
    stack: list[list[Entry]] = []
    names: list[str] = []
    for index, item in enumerate(layers):
        layer = item if isinstance(item, LayerInput) else LayerInput(item)
        name = layer_name(layer)
        names.append(name)
        stack.append(_headers(layer, f"{index + 1}/{len(layers)} ({name})", limits))
    return stack, names


def _headers(layer: LayerInput, label: str, limits: Limits) -> list[Entry]:
    tar: TarReader | None = None
    source = layer.source
    try:
        opened = source() if callable(source) else None
        with (
            opened if opened is not None else nullcontext(),
            LayerStream(opened if opened is not None else source) as stream,  # type: ignore[arg-type]
        ):
            tar = TarReader(stream, limits)
            entries: list[Entry] = []
            while (entry := tar.next()) is not None:
                entries.append(header_of(entry))
            return entries
    except ExtractorError as e:
        raise e.with_context(layer=label, entry=tar.current if tar else None) from None
    except OSError as e:
        raise OperationalError(e.strerror or str(e), layer=label) from None


def image_stack(
    path: str, ref: str | None = None, platform: str | None = None, limits: Limits | None = None
) -> tuple[list[list[Entry]], list[str]]:
    """``read_stack`` for the layers of an image (docker save, OCI layout or archive)."""
    from .images import open_image

    with open_image(path, ref=ref, platform=platform) as image:
        layers = [LayerInput(source=ref_.open, name=ref_.name) for ref_ in image.layers]
        return read_stack(layers, limits)


# -- simulating ---------------------------------------------------------------


class _SimulationError(Exception):
    """A simulated apply refused the stack at (layer, entry path)."""

    def __init__(self, error: ExtractorError, layer: int, path: str):
        super().__init__(str(error))
        self.error = error
        self.layer = layer
        self.path = path


def _no_data(n: int) -> bytes:
    return b""


def _feed(applier: LayerApplier, mem: MemRoot, index: int, entries: Sequence[Entry]) -> None:
    current: Entry | None = None
    try:
        for number, entry in enumerate(entries):
            current = entry
            mem.origin = Origin(index, entry.path, number)
            applier._apply(entry, _no_data)
        current = None
        applier._end_of_layer()
    except ExtractorError as e:
        path = current.path if current is not None else (e.entry or "")
        error = e.with_context(layer=applier.label, entry=_name(current))
        raise _SimulationError(error, index, path) from None
    except OSError as e:
        cls = BadInputError if e.errno in (errno.ENAMETOOLONG, errno.EMLINK) else OperationalError
        error = cls(e.strerror or str(e), layer=applier.label, entry=_name(current))
        raise _SimulationError(error, index, current.path if current is not None else "") from None


def _name(entry: Entry | None) -> str | None:
    return entry.name if entry is not None else None


def _label(index: int, names: Sequence[str]) -> str:
    return f"{index + 1}/{len(names)} ({names[index]})"


def chronological(stack: Stack, names: Sequence[str], privileged: bool, dirlinks: bool) -> MemRoot:
    """The tree an oldest-first apply makes, in memory; raises ``_SimulationError``."""
    mem = MemRoot(privileged, dirlinks)
    for index, entries in enumerate(stack):
        applier = LayerApplier(mem, LayerReport(index, names[index]), _label(index, names), None)
        _feed(applier, mem, index, entries)
    return mem


class _Recording(ReverseLayerApplier):
    """The reverse driver, noting what it skips and what each hardlink's target holds."""

    mem: MemRoot
    trace: Trace

    def _apply(self, entry: Entry, read: ReadData) -> None:
        if self.hider.hidden(entry.path):
            self.trace.skipped.add((self.report.index, entry.path))
        super()._apply(entry, read)

    def _hardlink(self, path: str, target: str) -> None:
        try:
            found = self.mem.lookup(target)
        except (ExtractorError, OSError):
            found = None
        self.trace.events.append(
            LinkEvent(self.report.index, path, target, found, self.hider.why(target))
        )
        super()._hardlink(path, target)


def reverse(
    stack: Stack, names: Sequence[str], privileged: bool, dirlinks: bool
) -> tuple[MemRoot, Trace]:
    """The tree a newest-first apply makes, in memory, and what it did (may raise)."""
    mem = MemRoot(privileged, dirlinks)
    hider = Hider()
    trace = Trace()
    for index in reversed(range(len(stack))):
        applier = _Recording(
            cast(Root, mem),
            LayerReport(index, names[index]),
            _label(index, names),
            None,
            hider,
            probe_memory(mem),
        )
        applier.mem, applier.trace = mem, trace
        _feed(applier, mem, index, stack[index])
    trace.below = hider.below
    return mem, trace


# -- comparing ----------------------------------------------------------------


def detect_stack(
    stack: Stack,
    names: Sequence[str] | None = None,
    *,
    privileged: bool = True,
    keep_dirlinks: bool = False,
    tolerate: bool = False,
) -> list[Conflict]:
    """Every path where a reverse apply of ``stack`` differs from a chronological one.

    A stack the chronological order refuses raises that order's error, unless
    ``tolerate``, which turns it into a ``chronological-order-fails`` conflict.
    """
    names = list(names) if names is not None else [f"layer {i + 1}" for i in range(len(stack))]
    try:
        chrono = chronological(stack, names, privileged, keep_dirlinks)
    except _SimulationError as f:
        if not tolerate:
            raise f.error from None
        why = f"oldest first, layer {f.layer + 1} is refused ({f.error.message})"
        return [
            Conflict(
                f.path,
                "chronological-order-fails",
                (f.layer + 1,),
                f"The stack applies newest first, but {why}.",
            )
        ]
    try:
        rev, trace = reverse(stack, names, privileged, keep_dirlinks)
    except _SimulationError as f:
        return [
            Conflict(
                f.path,
                "reverse-order-fails",
                (f.layer + 1,),
                f"Oldest first the stack applies, but newest first layer {f.layer + 1} "
                f"is refused at {f.path} ({f.error.message}).",
            )
        ]
    return compare(chrono, rev, trace, stack)


def detect(
    layers: Sequence[LayerSource | LayerInput], *, privileged: bool = True
) -> list[Conflict]:
    """Read the layers (headers only) and list the conflicts; see ``detect_stack``."""
    stack, names = read_stack(layers)
    return detect_stack(stack, names, privileged=privileged)


def render(conflicts: Sequence[Conflict]) -> str:
    """Human-readable text: one block per conflict."""
    lines = []
    for c in conflicts:
        layers = ", ".join(str(n) for n in c.layers)
        lines.append(f"{c.path}: {c.kind} (layers {layers})")
        lines.append(f"    {c.explanation}")
    return "".join(line + "\n" for line in lines)
