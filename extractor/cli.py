"""The ``extractor`` command: argparse in, one summary or one error line out.

This is the only module that prints or chooses an exit status; everything
else raises ``ExtractorError``.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
from collections.abc import Sequence
from dataclasses import asdict
from types import FrameType
from typing import Any, BinaryIO

from . import __version__, logs
from .apply import ApplyOptions, LayerSource, apply_layers
from .decode import retain_freed_chunks
from .errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    ExtractorError,
)
from .limits import Limits
from .model import ApplyResult
from .rootfs import IdMap

EXIT_TABLE = """\
exit status:
  0    success
  1    operational failure: an I/O error such as ENOSPC or EACCES; DEST not empty
  2    usage error
  3    bad input: not a tar, corrupt gzip/zstd, truncated layer, bad entry,
       bad image (JSON, media type, layer count), digest/size/DiffID mismatch
  4    not found: a layer file, image, blob, ref or platform that is not there
  5    refused as unsafe: malformed whiteout, root type change, symlink loop
  130  interrupted (SIGINT); 143 terminated (SIGTERM)
  141  standard output closed by its reader (as after SIGPIPE); nothing printed
"""


class _TerminatedError(Exception):
    """SIGTERM arrived."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _TerminatedError


def _platform(text: str) -> str:
    from .images import parse_platform

    try:
        return str(parse_platform(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _stdin() -> BinaryIO:
    """Standard input unbuffered, so the decoder can poll it and stop on a signal."""
    return open(sys.stdin.fileno(), "rb", buffering=0, closefd=False)


def _id_map(text: str) -> IdMap:
    try:
        return IdMap.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    add = common.add_argument
    add(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more logging: -v per layer, -vv per entry",
    )
    add("-q", "--quiet", action="store_true", help="no summary line and no progress")
    add(
        "--log-format",
        choices=("console", "json"),
        default="console",
        help="log lines for people (default) or one JSON object per line",
    )
    add("--no-progress", action="store_true", help="no progress line even on a terminal")
    add("--debug", action="store_true", help="show a traceback for unexpected errors")
    return common


def _engine_options() -> argparse.ArgumentParser:
    engine = argparse.ArgumentParser(add_help=False)
    add = engine.add_argument
    add(
        "--report",
        metavar="FILE",
        help="write a JSON report with per-layer counts ('-' for stdout)",
    )
    add(
        "--rootless",
        action="store_true",
        help="don't apply ownership, devices or privileged xattrs (implied when not root)",
    )
    add(
        "--uid-map",
        type=_id_map,
        action="append",
        default=[],
        metavar="C:H:SIZE",
        help="shift container uids C.. to host uids H.. (repeatable)",
    )
    add(
        "--gid-map",
        type=_id_map,
        action="append",
        default=[],
        metavar="C:H:SIZE",
        help="shift container gids C.. to host gids H.. (repeatable)",
    )
    add(
        "--keep-dirlinks",
        action="store_true",
        help="keep an existing symlink to a directory where a layer has a directory (usrmerge)",
    )
    add(
        "--order",
        choices=("chronological", "reverse"),
        default="chronological",
        help="oldest layer first (the default, correct), or newest first skipping what newer "
        "layers wrote, as ggcr and kaniko before #326 did: to reproduce their bugs; the "
        "--report then lists the paths where the orders differ ('conflicts')",
    )
    add(
        "--jobs",
        type=_positive,
        metavar="N",
        help="processes that write the tree: 1 writes all from one; 2 or more fork one helper "
        "that creates the regular files while the main process reads and decides (default: "
        "2 for layers of 1 MiB and more on a machine with 2+ CPUs)",
    )
    _add_limit_flags(engine, _LIMIT_FLAGS)
    return engine


def _add_limit_flags(
    parser: argparse.ArgumentParser, flags: Sequence[tuple[str, str, str]]
) -> None:
    """One ``--max-*`` option per ``(flag, Limits field, what it refuses)``."""
    for flag, field, what in flags:
        default = getattr(Limits(), field)
        parser.add_argument(
            flag,
            type=_positive,
            default=default,
            dest=f"limit_{field}",
            metavar="N",
            help=f"refuse {what} (default {default or 'none'}; see Limits in the README)",
        )


def _limits(args: argparse.Namespace) -> Limits:
    """The ``Limits`` the ``--max-*`` options given to this command ask for."""
    given = {field: getattr(args, f"limit_{field}", None) for _, field, _ in _LIMIT_FLAGS}
    return Limits(**{field: value for field, value in given.items() if value is not None})


# The configurable bounds: (flag, Limits field, what exceeding it means).
_LIMIT_FLAGS = (
    ("--max-path-bytes", "path_bytes", "entry paths and hardlink targets longer than N bytes"),
    (
        "--max-header-bytes",
        "header_bytes",
        "PAX headers, GNU long names and sparse maps over N bytes",
    ),
    ("--max-symlinks", "symlinks", "paths that follow more than N symlinks inside the root"),
    ("--max-hardlinks", "hardlinks", "layers that make more than N hardlinks (remade ones count)"),
    ("--max-entries", "entries", "layers of more than N entries"),
    ("--max-layer-bytes", "layer_bytes", "layers larger than N bytes uncompressed"),
)
# The ones that bound reading headers, which is all ``conflicts`` does with a layer.
_READING_FLAGS = tuple(f for f in _LIMIT_FLAGS if f[1] not in ("symlinks", "hardlinks"))


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"want a positive whole number, not {text!r}")
    return value


def _selection_options() -> argparse.ArgumentParser:
    select = argparse.ArgumentParser(add_help=False)
    add = select.add_argument
    add("--ref", metavar="NAME[:TAG]", help="which image of an archive or index")
    add(
        "--platform",
        type=_platform,
        metavar="OS/ARCH[/VARIANT]",
        help="which platform of a multi-platform index (default: this machine's)",
    )
    return select


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, exposed for tests and documentation."""
    common, engine, select = _common_options(), _engine_options(), _selection_options()
    parser = argparse.ArgumentParser(
        prog="extractor",
        description="Apply container image layers onto a directory, oldest first, safely.",
        epilog=EXIT_TABLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"extractor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, parents: list[argparse.ArgumentParser], summary: str, description: str
    ) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            parents=parents,
            help=summary,
            description=description,
            epilog=EXIT_TABLE,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    apply = command(
        "apply",
        [common, engine],
        "apply layer tarballs onto a directory",
        "Apply layer tarballs (plain, gzip or zstd), oldest first, onto DEST with the OCI "
        "changeset rules. DEST is created if missing; an existing tree is updated. "
        "'-' reads a layer from standard input.",
    )
    apply.add_argument("dest", metavar="DEST")
    apply.add_argument("layers", metavar="LAYER", nargs="+")

    unpack = command(
        "unpack",
        [common, engine, select],
        "unpack a whole image into a directory",
        "Unpack IMAGE (a docker save tarball, an OCI layout directory or tarball, "
        "optionally gzip or zstd compressed as a whole) into DEST, verifying every blob's "
        "digest and size and every layer's DiffID while streaming. DEST must be missing or "
        "empty unless --force; on failure what was written is removed again.",
    )
    unpack.add_argument("image", metavar="IMAGE")
    unpack.add_argument("dest", metavar="DEST")
    unpack.add_argument("--force", action="store_true", help="unpack over a non-empty DEST")
    unpack.add_argument(
        "--atomic",
        action="store_true",
        help="build the tree in a temporary sibling of DEST and move it into place only when "
        "complete, so a failure leaves DEST as it was",
    )
    unpack.add_argument(
        "--no-verify", action="store_true", help="skip the digest, size and DiffID checks"
    )

    inspect = command(
        "inspect",
        [common, select],
        "show an image's layers and config",
        "Print IMAGE's layers (index, media type, compressed size, digest, DiffID, the "
        "history's created_by) and a summary of its config. Nothing is unpacked.",
    )
    inspect.add_argument("image", metavar="IMAGE")
    inspect.add_argument("--json", action="store_true", help="one JSON document on stdout")

    diff = command(
        "diff",
        [common],
        "compare two rootfs trees entry by entry",
        "Compare the trees A and B entry by entry: type, mode (with setuid, setgid, sticky), "
        "owner, size, content sha256, symlink target, device numbers, xattrs, hardlink groups "
        "and, with --mtime, modification times. Nothing is written; no symlink is followed. "
        "One line per difference on stdout, 'PATH: KIND: A-VALUE != B-VALUE' or "
        "'PATH: only in A (TYPE)'; -q prints nothing and stops at the first difference.",
    )
    diff.epilog = (
        "exit status:\n  0    the trees are the same\n  1    they differ\n"
        "  2    usage error, or a tree is missing or unreadable\n"
    )
    diff.add_argument("a", metavar="A")
    diff.add_argument("b", metavar="B")
    diff.add_argument("--mtime", action="store_true", help="compare modification times too")
    diff.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="PATTERN",
        help="skip relative paths matching this fnmatch pattern, and all below them (repeatable)",
    )
    diff.add_argument(
        "--json", action="store_true", help="one JSON document on stdout (extractor.diff/v1)"
    )

    export = command(
        "export",
        [common, select],
        "write a rootfs or an image as one reproducible tar",
        "Write SOURCE (a rootfs directory, or an IMAGE as unpack takes it, unpacked first "
        "into a temporary directory) as one flattened tar with reproducible bytes: members "
        "sorted, './' first, numeric owners, pax xattrs, hardlinks as links, mtimes clamped "
        "to SOURCE_DATE_EPOCH when set. OUT.tar '-' writes to stdout.",
    )
    export.add_argument("source", metavar="SOURCE")
    export.add_argument("out", metavar="OUT.tar")
    export.add_argument(
        "--source-date-epoch",
        metavar="N",
        help="clamp mtimes to N seconds since the epoch (default: $SOURCE_DATE_EPOCH)",
    )
    export.add_argument(
        "--rootless",
        action="store_true",
        help="owners from user.rootlesscontainers, else 0:0 for your files (implied when not root)",
    )
    _corpus_commands(command, common)
    _conflicts_command(command, common, select)
    return parser


def _corpus_commands(command: Any, common: argparse.ArgumentParser) -> None:
    """Register ``corpus`` and ``conformance`` (see ``corpus`` and ``conformance``)."""
    corpus = command(
        "corpus",
        [common],
        "write the conformance corpus as layers, images and expected trees",
        "Write every case of the conformance corpus under OUT/CASE: layers/N.tar (oldest "
        "first), oci (an OCI layout, image tagged 'case'), docker-save.tar, expected.json "
        "(the expected tree or error) and outside/ (the canary files that absolute symlink "
        "targets of escape cases point at).",
    )
    corpus.add_argument("out", metavar="OUT")
    corpus.add_argument(
        "--cases", metavar="DIR", help="corpus directory (default: testdata/corpus)"
    )
    conformance = command(
        "conformance",
        [common],
        "grade an unpacker against the corpus",
        "Run an unpacker over every corpus case in a throwaway directory, with canary files "
        "outside the destination, and print a pass/fail table. COMMAND runs with sh -c; "
        "{image} is an OCI layout (tag 'case'), {docker} a docker-save tar, {layers} the layer "
        "tars oldest first, {dest} the empty destination. Any change outside {dest} is an "
        "ESCAPE. A case expecting a refusal passes when the command exits non-zero.",
    )
    conformance.epilog = "exit status:\n  0    every case passed\n  1    some case failed\n"
    which = conformance.add_mutually_exclusive_group(required=True)
    which.add_argument("--unpacker", metavar="COMMAND", help="the command to grade")
    which.add_argument(
        "--profile", choices=("umoci", "tar", "extractor"), help="a ready-made command"
    )
    conformance.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="seconds per case (default 30)"
    )
    conformance.add_argument("--case", action="append", default=[], help="only these cases")
    conformance.add_argument("--cases", metavar="DIR", help="corpus directory")
    conformance.add_argument(
        "--json", action="store_true", help="one JSON document on stdout (extractor.conformance/v1)"
    )


def _cmd_corpus(args: argparse.Namespace) -> int:
    from .corpus import load_cases, write_corpus

    dirs = write_corpus(args.out, load_cases(args.cases))
    if not args.quiet:
        print(f"wrote {len(dirs)} cases -> {os.path.abspath(args.out)}", file=sys.stderr)
    return EXIT_OK


def _cmd_conformance(args: argparse.Namespace) -> int:
    from .conformance import as_json, profiles, render_table, run_conformance
    from .corpus import load_cases

    cases = load_cases(args.cases)
    if args.case:
        unknown = sorted(set(args.case) - {c.name for c in cases})
        if unknown:
            _error(f"no such case: {', '.join(unknown)}")
            return EXIT_USAGE
        cases = [c for c in cases if c.name in args.case]
    command = args.unpacker if args.unpacker is not None else profiles()[args.profile]
    label = args.profile or "unpacker"
    results = run_conformance(cases, command, args.timeout)
    sys.stdout.write(
        as_json(results, label, command) if args.json else render_table(results, label)
    )
    return EXIT_OK if all(r.passed for r in results) else EXIT_FAILURE


def _conflicts_command(
    command: Any, common: argparse.ArgumentParser, select: argparse.ArgumentParser
) -> None:
    """Register ``conflicts`` (see ``conflicts`` and ``explain``)."""
    conflicts = command(
        "conflicts",
        [common, select],
        "list the paths where unpacking newest first gives a different tree",
        "Read IMAGE, or the layer tarballs given with --layers (oldest first): headers only, "
        "nothing is written. Simulate applying them oldest first (the correct order) and "
        "newest first, skipping what newer layers wrote (as ggcr's Extract and kaniko before "
        "#326 do; see 'apply --order reverse'), and list every path where the two trees "
        "differ (type, symlink target, which layer's bytes, hardlink grouping), with a kind, "
        "the layers involved (counted from 1, oldest first) and one sentence that explains it.",
    )
    conflicts.epilog = (
        "exit status:\n  0    no conflicts\n  1    conflicts found\n  2    usage error\n"
        "  3    bad input (as for apply)\n  4    not found\n  5    refused as unsafe\n"
    )
    conflicts.add_argument("image", metavar="IMAGE", nargs="?")
    conflicts.add_argument(
        "--layers", nargs="+", metavar="LAYER", help="layer tarballs, oldest first, not an image"
    )
    conflicts.add_argument(
        "--json", action="store_true", help="one JSON document on stdout (extractor.conflicts/v1)"
    )
    _add_limit_flags(conflicts, _READING_FLAGS)


def _cmd_conflicts(args: argparse.Namespace) -> int:
    from .conflicts import detect_stack, document, image_stack, read_stack, render

    if (args.image is None) == (args.layers is None):
        _error("conflicts takes IMAGE or --layers LAYER..., exactly one of the two")
        return EXIT_USAGE
    if args.layers is not None:
        if args.ref is not None or args.platform is not None:
            _error("--ref and --platform select an image; they do not go with --layers")
            return EXIT_USAGE
        if args.layers.count("-") > 1:
            _error("standard input can be read only once")
            return EXIT_USAGE
        sources = [_stdin() if name == "-" else name for name in args.layers]
        stack, names = read_stack(sources, _limits(args))
    else:
        stack, names = image_stack(args.image, args.ref, args.platform, _limits(args))
    found = detect_stack(stack, names)
    if args.json:
        sys.stdout.write(json.dumps(document(found), indent=2) + "\n")
    else:
        sys.stdout.write(render(found))
        if not args.quiet:
            layers = f"{len(stack)} layer{'s' if len(stack) != 1 else ''}"
            if found:
                count = f"{len(found)} path{'s' if len(found) != 1 else ''}"
                line = f"{count} differ when the {layers} are applied newest first"
            else:
                line = f"no conflicts: the {layers} give the same tree in either order"
            print(line, file=sys.stderr)
    return EXIT_FAILURE if found else EXIT_OK


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
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise
        # ``extractor diff ... | head``: end quietly, as a program killed by
        # SIGPIPE would (Python ignores the signal, so the write raised instead).
        _discard_stdout()
        return 128 + signal.SIGPIPE
    except Exception as e:
        if args.debug:
            raise
        _error(f"unexpected error: {type(e).__name__}: {e} (run with --debug for a traceback)")
        return EXIT_FAILURE
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stdout_reader_gone() -> bool:
    """Whether standard output is a pipe whose reading end has been closed."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (OSError, ValueError):
        return False


def _discard_stdout() -> None:
    """Point standard output at /dev/null, so what is still buffered goes nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def run() -> None:
    """The console entry point: ``main``, then a quick exit.

    Tearing the interpreter down (modules, the compiled build, a layer's
    path sets) costs 10-20 ms that nobody waits for, so once ``main`` has
    returned and the output is flushed the process ends with ``os._exit``.
    Nothing is left to run at exit: ``main`` closes what it opens, and the
    helper process and decoding threads have ended before it returns.
    """
    status = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (``| head``), as in ``main``
        status = 128 + signal.SIGPIPE
    except OSError as e:  # what is still buffered is lost: ENOSPC must not pass as success
        _error(f"cannot write standard output: {e.strerror or e}")
        status = EXIT_FAILURE
    try:
        sys.stderr.flush()
    except OSError:
        pass  # nowhere left to say so
    os._exit(status)


def _error(message: str) -> None:
    print(f"extractor: error: {message}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    if args.command in ("apply", "unpack"):
        retain_freed_chunks()  # the program's to set, not the library's
    if args.command == "apply":
        return _cmd_apply(args)
    if args.command == "unpack":
        return _cmd_unpack(args)
    if args.command == "diff":
        return _cmd_diff(args)
    if args.command == "export":
        return _cmd_export(args)
    if args.command == "corpus":
        return _cmd_corpus(args)
    if args.command == "conflicts":
        return _cmd_conflicts(args)
    if args.command == "conformance":
        return _cmd_conformance(args)
    return _cmd_inspect(args)


def _apply_options(args: argparse.Namespace) -> ApplyOptions:
    progress = logs.Progress(
        enabled=False if args.quiet or args.no_progress or args.log_format == "json" else None
    )
    return ApplyOptions(
        rootless=args.rootless,
        uid_maps=tuple(args.uid_map),
        gid_maps=tuple(args.gid_map),
        keep_dirlinks=args.keep_dirlinks,
        verify=not getattr(args, "no_verify", False),
        limits=_limits(args),
        progress=progress,
        jobs=args.jobs,
    )


def _finish(args: argparse.Namespace, result: ApplyResult, image: dict[str, Any] | None) -> int:
    if args.report:
        _write_report(args.report, args.command, result, image, None)
    line = summary(result, image)
    if args.quiet:
        pass
    elif args.log_format == "json":
        logs.get_logger().warning(f"{args.command}_finished", summary=line, **_totals(result))
    else:
        print(line, file=sys.stderr)
    return EXIT_OK


def _failed(args: argparse.Namespace, error: ExtractorError, image: dict[str, Any] | None) -> None:
    if args.report:
        partial = error.partial if isinstance(error.partial, ApplyResult) else None
        _write_report(args.report, args.command, partial, image, error)


def _cmd_apply(args: argparse.Namespace) -> int:
    if args.layers.count("-") > 1:
        _error("standard input can be read only once")
        return EXIT_USAGE
    sources: list[LayerSource] = [_stdin() if layer == "-" else layer for layer in args.layers]
    try:
        if args.order != "reverse":
            result = apply_layers(args.dest, sources, _apply_options(args))
        else:
            from .reverse import apply_layers_reverse

            result = apply_layers_reverse(args.dest, sources, _apply_options(args))
    except ExtractorError as e:
        _failed(args, e, None)
        raise
    return _finish(args, result, None)


def _cmd_unpack(args: argparse.Namespace) -> int:
    from .unpack import unpack_image  # image reading is not needed by apply: import it late

    if args.no_verify:
        logs.get_logger().warning("verification_disabled", image=args.image)
    try:
        done = unpack_image(
            args.image,
            args.dest,
            ref=args.ref,
            platform=args.platform,
            force=args.force,
            atomic=args.atomic,
            options=_apply_options(args),
            order=args.order,
        )
    except ExtractorError as e:
        _failed(args, e, None)
        raise
    return _finish(args, done.apply, done.image)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .images import describe, open_image

    with open_image(args.image, ref=args.ref, platform=args.platform) as image:
        info = describe(image)
    if args.json:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
    else:
        sys.stdout.write(render_inspect(info))
    return EXIT_OK


def _cmd_diff(args: argparse.Namespace) -> int:
    from .treediff import EXIT_DIFFERENT, diff_trees

    differences = diff_trees(args.a, args.b, mtime=args.mtime, ignore=args.ignore)
    if args.quiet:
        found = next(differences, None) is not None
        differences.close()
        return EXIT_DIFFERENT if found else EXIT_OK
    # Streamed: one difference at a time, so "equal" comes last in the JSON document.
    out = sys.stdout
    found = False
    if args.json:
        out.write('{"schema": "extractor.diff/v1", "differences": [')
    for difference in differences:
        if args.json:
            out.write(("," if found else "") + "\n  " + json.dumps(difference.as_dict()))
        else:
            out.write(f"{difference}\n")
        found = True
    if args.json:
        out.write(("\n" if found else "") + f'], "equal": {json.dumps(not found)}}}\n')
    return EXIT_DIFFERENT if found else EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import ExportOptions, export, parse_epoch

    env = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    epoch = args.source_date_epoch
    epoch = parse_epoch(epoch, "--source-date-epoch") if epoch is not None else None
    if epoch is None and env:
        epoch = parse_epoch(env)
    if args.out == "-" and sys.stdout.isatty():
        _error("refusing to write a tar to a terminal; redirect stdout or name a file")
        return EXIT_USAGE
    options = ExportOptions(source_date_epoch=epoch, rootless=args.rootless)
    result = export(args.source, args.out, options, ref=args.ref, platform=args.platform)
    if not args.quiet:
        line = (
            f"exported {result.entries:,} entries, {result.size / 2**20:.1f} MiB, "
            f"{result.sha256} -> {result.out}"
        )
        if result.skipped:
            line += f" ({len(result.skipped)} sockets left out)"
        if result.warnings:
            line += f" ({result.warnings} unpack warnings)"
        print(line, file=sys.stderr)
    return EXIT_OK


def render_inspect(info: dict[str, Any]) -> str:
    """``inspect``'s human-readable text from ``describe``'s document."""
    lines = [
        f"{key}: {value}"
        for key, value in info.items()
        if key not in ("layers", "config") and value not in (None, [], {})
    ]
    config = info.get("config") or {}
    for key, value in config.items():
        if value not in (None, [], {}, ""):
            lines.append(f"config.{key}: {value}")
    lines.append("layers:")
    lines.append(
        f"  {'#':>3}  {'size':>10}  {'digest':<19}  {'diff_id':<19}  media type / created by"
    )
    for layer in info.get("layers", []):
        lines.append(
            f"  {layer['index']:>3}  {_size(layer.get('size')):>10}  "
            f"{_short(layer.get('digest')):<19}  {_short(layer.get('diff_id')):<19}  "
            f"{layer.get('media_type') or '-'}"
        )
        if layer.get("created_by"):
            lines.append(f"  {'':>3}  {'':>10}  {'':<19}  {'':<19}  {layer['created_by']}")
    return "\n".join(lines) + "\n"


def _short(digest: str | None) -> str:
    return "-" if not digest else digest[:19]


def _size(size: int | None) -> str:
    return "-" if size is None else f"{size:,}"


def summary(result: ApplyResult, image: dict[str, Any] | None = None) -> str:
    """The one-line summary printed after an apply or unpack."""
    layers = len(result.layers)
    what = "applied"
    if image is not None:
        name = " ".join(str(image[k]) for k in ("platform", "ref") if image.get(k))
        what = f"unpacked {name}:" if name else "unpacked"
    line = (
        f"{what} {layers} layer{'s' if layers != 1 else ''}, {result.entries:,} entries, "
        f"{result.bytes / 2**20:.1f} MiB in {result.seconds:.2f} s -> {result.dest}"
    )
    if image is not None and all(layer.verified for layer in result.layers) and layers:
        line += " (verified)"
    if result.warnings:
        line += f" ({len(result.warnings)} warnings; see --report)"
    if result.rootless:
        line += " [rootless]"
    return line


def report_dict(
    command: str,
    result: ApplyResult | None,
    image: dict[str, Any] | None,
    error: ExtractorError | None,
) -> dict[str, Any]:
    """The ``--report`` JSON document (schema ``extractor.report/v1``)."""
    doc: dict[str, Any] = {"schema": "extractor.report/v1", "command": command}
    if image is not None:
        doc["image"] = image
    if result is not None:
        doc["dest"] = result.dest
        doc["rootless"] = result.rootless
        doc["layers"] = [asdict(layer) for layer in result.layers]
        doc["totals"] = _totals(result)
        doc["warnings"] = [asdict(w) for w in result.warnings]
        conflicts = getattr(result, "conflicts", None)  # a reverse apply's (see reverse.py)
        if conflicts is not None:
            doc["order"] = "reverse"
            doc["conflicts"] = [c.as_dict() for c in conflicts]
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


def _write_report(
    target: str,
    command: str,
    result: ApplyResult | None,
    image: dict[str, Any] | None,
    error: ExtractorError | None,
) -> None:
    text = json.dumps(report_dict(command, result, image, error), indent=2) + "\n"
    if target == "-":
        sys.stdout.write(text)
        return
    tmp = f"{target}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, target)
