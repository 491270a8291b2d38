"""The errors a user can meet. The CLI turns each into one line and an exit status.

Every error carries the layer and the entry it happened at, when known, so the
message reads ``layer 2 (base.tar.gz) entry usr/bin/x: <what went wrong>``.
The exit statuses are documented in the README; keep the two in step.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1  # I/O errors such as ENOSPC or EACCES
EXIT_USAGE = 2  # bad command line (argparse uses 2 as well)
EXIT_BAD_INPUT = 3  # not a tar, corrupt compression, truncated layer, bad entry
EXIT_NOT_FOUND = 4  # a layer file or image that does not exist
EXIT_UNSAFE = 5  # refused as unsafe: malformed whiteout, root type change, link loop
EXIT_INTERRUPTED = 130  # SIGINT; SIGTERM gives 143


class ExtractorError(Exception):
    """Base of every error this package raises on purpose.

    ``layer`` is a short human label of the layer (its index and name) and
    ``entry`` the tar member name, each ``None`` when it does not apply.
    """

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, layer: str | None = None, entry: str | None = None):
        super().__init__(message)
        self.message = message
        self.layer = layer
        self.entry = entry
        # What was done before the failure (an ApplyResult), for --report.
        self.partial: object | None = None

    def with_context(self, *, layer: str | None = None, entry: str | None = None) -> ExtractorError:
        """Fill in the layer and entry if they are not known yet; returns self."""
        if self.layer is None:
            self.layer = layer
        if self.entry is None:
            self.entry = entry
        return self

    def __str__(self) -> str:
        where = []
        if self.layer is not None:
            where.append(f"layer {_printable(self.layer)}")
        if self.entry is not None:
            entry = self.entry
            if len(entry) > 160:  # keep the one line readable for hostile 64 KiB names
                entry = f"{entry[:60]}...({len(entry)} characters)...{entry[-60:]}"
            where.append(f"entry {_printable(entry)}")
        prefix = " ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


def _printable(text: str) -> str:
    """Escape control characters, so a hostile name can neither break the one-line
    message into several nor send escape sequences to a terminal."""
    if text.isprintable():
        return text
    out = []
    for c in text:
        code = ord(c)
        if c.isprintable() or 0xDC80 <= code <= 0xDCFF:  # surrogates stand for raw bytes
            out.append(c)
        else:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return "".join(out)


class OperationalError(ExtractorError):
    """The filesystem refused an operation (ENOSPC, EACCES, EIO, ...)."""

    exit_code = EXIT_FAILURE


class BadInputError(ExtractorError):
    """The input is not what it claims: not a tar, corrupt, truncated, inconsistent."""

    exit_code = EXIT_BAD_INPUT


class NotFoundError(ExtractorError):
    """A named input does not exist."""

    exit_code = EXIT_NOT_FOUND


class UnsafeEntryError(ExtractorError):
    """An entry was refused because applying it would break the rules or the root."""

    exit_code = EXIT_UNSAFE


class FailedWriteError(OSError):
    """A file the helper process could not create; ``entry`` is its path in the layer."""

    entry: str | None = None
