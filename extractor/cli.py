"""The ``extractor`` command: argparse in, one summary or one error line out.

This is the only module that prints or chooses an exit status; everything
else raises ``ExtractorError``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import asdict
from types import FrameType
from typing import Any, BinaryIO

from . import __version__, logs
from .apply import ApplyOptions, LayerSource, apply_layers
from .errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    ExtractorError,
)
from .model import ApplyResult
from .rootfs import IdMap

EXIT_TABLE = """\
exit status:
  0    success
  1    operational failure: an I/O error such as ENOSPC or EACCES
  2    usage error
  3    bad input: not a tar, corrupt gzip/zstd, truncated layer, bad entry
  4    not found: a layer file that does not exist
  5    refused as unsafe: malformed whiteout, root type change, symlink loop
  130  interrupted (SIGINT); 143 terminated (SIGTERM)
"""


class _TerminatedError(Exception):
    """SIGTERM arrived."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _TerminatedError


def _id_map(text: str) -> IdMap:
    try:
        return IdMap.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, exposed for tests and documentation."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more logging: -v per layer, -vv per entry",
    )
    common.add_argument(
        "-q", "--quiet", action="store_true", help="no summary line and no progress"
    )
    common.add_argument(
        "--log-format",
        choices=("console", "json"),
        default="console",
        help="log lines for people (default) or one JSON object per line",
    )
    common.add_argument(
        "--no-progress", action="store_true", help="no progress line even on a terminal"
    )
    common.add_argument(
        "--debug", action="store_true", help="show a traceback for unexpected errors"
    )

    parser = argparse.ArgumentParser(
        prog="extractor",
        description="Apply container image layers onto a directory, oldest first, safely.",
        epilog=EXIT_TABLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"extractor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    apply = sub.add_parser(
        "apply",
        parents=[common],
        epilog=EXIT_TABLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="apply layer tarballs onto a directory",
        description="Apply layer tarballs (plain, gzip or zstd), oldest first, onto DEST "
        "with the OCI changeset rules. DEST is created if missing; an existing "
        "tree is updated. '-' reads a layer from standard input.",
    )
    apply.add_argument("dest", metavar="DEST")
    apply.add_argument("layers", metavar="LAYER", nargs="+")
    apply.add_argument(
        "--report",
        metavar="FILE",
        help="write a JSON report with per-layer counts ('-' for stdout)",
    )
    apply.add_argument(
        "--rootless",
        action="store_true",
        help="don't apply ownership, devices or privileged xattrs (implied when not root)",
    )
    apply.add_argument(
        "--uid-map",
        type=_id_map,
        action="append",
        default=[],
        metavar="C:H:SIZE",
        help="shift container uids C.. to host uids H..",
    )
    apply.add_argument(
        "--gid-map",
        type=_id_map,
        action="append",
        default=[],
        metavar="C:H:SIZE",
        help="shift container gids C.. to host gids H..",
    )
    apply.add_argument(
        "--keep-dirlinks",
        action="store_true",
        help="keep an existing symlink to a directory where a layer has a directory (usrmerge)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(args.verbose, args.log_format)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _run(args)
    except ExtractorError as e:
        _error(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    except _TerminatedError:
        _error("terminated")
        return 128 + signal.SIGTERM
    except Exception as e:
        if args.debug:
            raise
        _error(f"unexpected error: {type(e).__name__}: {e} (run with --debug for a traceback)")
        return EXIT_FAILURE
    finally:
        signal.signal(signal.SIGTERM, previous)


def _error(message: str) -> None:
    print(f"extractor: error: {message}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    if args.command == "apply":
        return _cmd_apply(args)
    _error(f"unknown command {args.command}")  # argparse prevents this
    return EXIT_USAGE


def _cmd_apply(args: argparse.Namespace) -> int:
    if args.layers.count("-") > 1:
        _error("standard input can be read only once")
        return EXIT_USAGE
    stdin: BinaryIO = sys.stdin.buffer
    sources: list[LayerSource] = [stdin if layer == "-" else layer for layer in args.layers]
    progress = logs.Progress(enabled=None if not (args.quiet or args.no_progress) else False)
    if args.log_format == "json":
        progress.enabled = False
    options = ApplyOptions(
        rootless=args.rootless,
        uid_maps=tuple(args.uid_map),
        gid_maps=tuple(args.gid_map),
        keep_dirlinks=args.keep_dirlinks,
        progress=progress,
    )
    try:
        result = apply_layers(args.dest, sources, options)
    except ExtractorError as e:
        if args.report:
            partial = e.partial if isinstance(e.partial, ApplyResult) else None
            _write_report(args.report, partial, e)
        raise
    if args.report:
        _write_report(args.report, result, None)
    if args.quiet:
        pass
    elif args.log_format == "json":
        logs.get_logger().warning("apply_finished", summary=summary(result), **_totals(result))
    else:
        print(summary(result), file=sys.stderr)
    return EXIT_OK


def summary(result: ApplyResult) -> str:
    """The one-line summary printed after an apply."""
    mib = result.bytes / 2**20
    line = (
        f"applied {len(result.layers)} layer{'s' if len(result.layers) != 1 else ''}, "
        f"{result.entries:,} entries, {mib:.1f} MiB in {result.seconds:.2f} s "
        f"-> {result.dest}"
    )
    if result.warnings:
        line += f" ({len(result.warnings)} warnings; see --report)"
    if result.rootless:
        line += " [rootless]"
    return line


def report_dict(result: ApplyResult | None, error: ExtractorError | None) -> dict[str, Any]:
    """The ``--report`` JSON document (schema ``extractor.report/v1``)."""
    doc: dict[str, Any] = {"schema": "extractor.report/v1", "command": "apply"}
    if result is not None:
        doc["dest"] = result.dest
        doc["rootless"] = result.rootless
        doc["layers"] = [asdict(layer) for layer in result.layers]
        doc["totals"] = _totals(result)
        doc["warnings"] = [asdict(w) for w in result.warnings]
    doc["exit_code"] = EXIT_OK if error is None else error.exit_code
    if error is not None:
        doc["error"] = {"message": str(error), "layer": error.layer, "entry": error.entry}
    return doc


def _totals(result: ApplyResult) -> dict[str, Any]:
    return {
        "layers": len(result.layers),
        "entries": result.entries,
        "bytes": result.bytes,
        "warnings": len(result.warnings),
        "seconds": round(result.seconds, 4),
    }


def _write_report(target: str, result: ApplyResult | None, error: ExtractorError | None) -> None:
    text = json.dumps(report_dict(result, error), indent=2) + "\n"
    if target == "-":
        sys.stdout.write(text)
        return
    tmp = f"{target}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, target)
