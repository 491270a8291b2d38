"""Logging through structlog, and a progress line for terminals.

Logs go to stderr: readable on a terminal, one JSON object per line with
``--log-format json``. Levels: warning by default, ``-v`` info (one line per
layer), ``-vv`` debug (one line per entry). The engine asks ``debug_enabled``
once per layer, so per-entry logging costs a boolean test when it is off.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

# logging's level numbers, which structlog's filtering loggers take.
DEBUG, INFO, WARNING = 10, 20, 30
_LEVELS = {0: WARNING, 1: INFO, 2: DEBUG}
_level = WARNING
# What ``configure`` was asked for, until structlog is loaded to take it.
_deferred: tuple[str, TextIO] | None = None


def configure(verbosity: int = 0, fmt: str = "console", stream: TextIO | None = None) -> None:
    """Set up structlog for this process: level from ``verbosity``, ``console`` or ``json``.

    Importing structlog costs every run about 40 ms (it imports asyncio), so a
    process that has not loaded it yet loads it with the first line that passes
    the level; where it is loaded (the application uses it too), it is set up
    at once.
    """
    global _level, _deferred
    _level = _LEVELS.get(min(verbosity, 2), WARNING)
    _deferred = (fmt, stream or sys.stderr)
    if "structlog" in sys.modules:
        _install()


def _install() -> None:
    """Hand ``configure``'s settings, if any are waiting, to structlog."""
    global _deferred
    if _deferred is None:
        return
    import structlog

    fmt, out = _deferred
    _deferred = None
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=out.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_level),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


_quiet_default: Any = None


def _structlog_logger() -> Any:
    """The bound structlog logger a line goes to, loading structlog if need be.

    When the application has configured structlog (the CLI does, through
    ``configure``), its configuration is used. Otherwise a library caller gets
    warnings only, on stderr, without touching structlog's global settings.
    """
    global _quiet_default
    _install()
    import structlog

    if structlog.is_configured():
        return structlog.get_logger("extractor")
    if _quiet_default is None:
        _quiet_default = structlog.wrap_logger(
            structlog.PrintLogger(sys.stderr),
            processors=[
                structlog.processors.add_log_level,
                structlog.dev.ConsoleRenderer(
                    colors=False, exception_formatter=structlog.dev.plain_traceback
                ),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(WARNING),
        )
    return _quiet_default


class Logger:
    """The package logger: ``debug``, ``info`` and ``warning`` with an event name
    and key-value pairs, as structlog's bound loggers take them. A line below
    the level is dropped here, before structlog is loaded for it."""

    def debug(self, event: str, **kw: Any) -> None:
        """Log ``event`` at debug level."""
        if self._wanted(DEBUG):
            _structlog_logger().debug(event, **kw)

    def info(self, event: str, **kw: Any) -> None:
        """Log ``event`` at info level."""
        if self._wanted(INFO):
            _structlog_logger().info(event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        """Log ``event`` at warning level."""
        if self._wanted(WARNING):
            _structlog_logger().warning(event, **kw)

    @staticmethod
    def _wanted(level: int) -> bool:
        if level >= _level:
            return True
        # Below our level, only an application's own structlog set-up may want it.
        loaded = sys.modules.get("structlog")
        return loaded is not None and _deferred is None and bool(loaded.is_configured())


_LOGGER = Logger()


def get_logger() -> Logger:
    """The package logger (``Logger``), writing through structlog."""
    return _LOGGER


def debug_enabled() -> bool:
    """Whether per-entry debug lines are wanted; ask once per layer, not per entry."""
    return _level <= DEBUG


class Progress:
    """One self-rewriting stderr line: ``layer 2/3 base.tar.gz  12.0/45.2 MiB  80 MiB/s``.

    Shown only on a terminal; elsewhere every call is a no-op. Redrawn at
    most ten times a second, so calling ``update`` per entry is cheap.
    """

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None):
        self._out = stream or sys.stderr
        self.enabled = self._out.isatty() if enabled is None else enabled
        self._label = ""
        self._total = 0
        self._start = 0.0
        self._next = 0.0

    def start(self, label: str, total: int) -> None:
        """Begin a layer of ``total`` bytes (0 if unknown)."""
        self._label, self._total = label, total
        self._start = self._next = time.monotonic()

    def update(self, done: int) -> None:
        """Show ``done`` bytes read of the current layer."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + 0.1
        rate = done / max(now - self._start, 1e-6) / 2**20
        total = f"/{self._total / 2**20:.1f}" if self._total else ""
        line = f"layer {self._label}  {done / 2**20:.1f}{total} MiB  {rate:.0f} MiB/s"
        self._out.write("\r\x1b[K" + line)
        self._out.flush()

    def close(self) -> None:
        """Erase the line."""
        if self.enabled and self._label:
            self._out.write("\r\x1b[K")
            self._out.flush()
