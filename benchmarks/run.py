"""Benchmark `extractor apply` side by side with other unpackers, in one run.

    .venv/bin/python benchmarks/run.py [--scale S] [--runs N] [--where tmpfs|disk|both]
                                       [--inputs A,B] [--commands A,B] [--quick]
                                       [--memory [--memory-gb G]] [--write-readme]

Builds (once, cached under benchmarks/work/) the input stacks of ``stacks.py``, then runs every
command on every input and target N times, interleaved, each run a whole process into a
freshly emptied directory, and prints a markdown table of medians, ratios, CPU time and peak
RSS. See benchmarks/README.md for the method.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import measure
import stacks

HERE = Path(__file__).resolve().parent
TOP = HERE.parent
README = HERE / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
MIB = 2**20
MAX_RSS_MIB = 100  # the bound the memory check holds extractor to, whatever the stack

PY_EXTRACT = (
    "import sys, tarfile\n"
    "kw = {'filter': 'fully_trusted'} if hasattr(tarfile, 'fully_trusted_filter') else {}\n"
    "with tarfile.open(sys.argv[1], 'r|*') as t:\n"
    "    t.extractall(sys.argv[2], numeric_owner=True, **kw)\n"
)


def _sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def _per_layer(template: str, stack: stacks.Stack, dest: str) -> list[str]:
    """One shell command applying ``template`` (with {L} and {D}) to each layer in order."""
    q = shlex.quote
    script = " && ".join(template.format(L=q(x.path), D=q(dest)) for x in stack.layers)
    if len(stack.layers) == 1 and "|" not in template:
        return shlex.split(script)
    return _sh(script)


def _extractor_argv() -> list[str]:
    exe = TOP / ".venv" / "bin" / "extractor"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "extractor"]


@dataclass(frozen=True)
class Command:
    """A way of unpacking a stack; ``argv`` is None when it does not apply to that stack."""

    key: str
    label: str
    tools: tuple[str, ...]
    argv: Callable[[stacks.Stack, str], list[str] | None]
    baseline: bool = False  # the `tar` row the "vs tar" column divides by


def _tar(s: stacks.Stack, d: str) -> list[str] | None:
    return _per_layer("tar -xzf {L} -C {D}", s, d) if s.compression == "gzip" else None


def _zstd_tar(s: stacks.Stack, d: str) -> list[str] | None:
    return _per_layer("zstd -dcq {L} | tar -x -C {D}", s, d) if s.compression == "zstd" else None


def _pigz(s: stacks.Stack, d: str) -> list[str] | None:
    return _per_layer("pigz -dc {L} | tar -x -C {D}", s, d) if s.compression == "gzip" else None


def _bsdtar(s: stacks.Stack, d: str) -> list[str] | None:
    return _per_layer("bsdtar -xf {L} -C {D}", s, d)


def _umoci(s: stacks.Stack, d: str) -> list[str] | None:
    return ["umoci", "--log", "error", "raw", "unpack", "--image", s.image, d]


def _python(s: stacks.Stack, d: str) -> list[str] | None:
    if len(s.layers) != 1 or s.compression != "gzip":
        return None  # no whiteouts, and Python 3.11's tarfile reads no zstd
    return [sys.executable, "-c", PY_EXTRACT, s.layers[0].path, d]


def _extractor(s: stacks.Stack, d: str) -> list[str] | None:
    return [*_extractor_argv(), "apply", "-q", d, *(x.path for x in s.layers)]


def _extractor_one_process(s: stacks.Stack, d: str) -> list[str] | None:
    return [*_extractor_argv(), "apply", "-q", "--jobs", "1", d, *(x.path for x in s.layers)]


def _extractor_sources(s: stacks.Stack, d: str) -> list[str] | None:
    # The same code interpreted, as where no C compiler built the native modules.
    return [
        "env",
        "EXTRACTOR_PURE=1",
        *_extractor_argv(),
        "apply",
        "-q",
        d,
        *(x.path for x in s.layers),
    ]


def _extractor_build() -> str:
    """Which build the ``extractor`` rows ran: compiled with mypyc or the sources."""
    probe = "import extractor.native as n, extractor; print(n.compiled())"
    exe = TOP / ".venv" / "bin" / "python"
    out = subprocess.run(
        [str(exe) if exe.exists() else sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return "compiled with mypyc (`make native`)" if out == "True" else "sources only (not compiled)"


COMMANDS = (
    Command("tar", "tar -xzf", ("tar",), _tar, baseline=True),
    Command("zstd", "zstd -dc \\| tar -x", ("zstd", "tar"), _zstd_tar, baseline=True),
    Command("pigz", "pigz -dc \\| tar -x", ("pigz", "tar"), _pigz),
    Command("bsdtar", "bsdtar -xf", ("bsdtar",), _bsdtar),
    Command("umoci", "umoci raw unpack", ("umoci",), _umoci),
    Command("python", "python tarfile.extractall", (), _python),
    Command("extractor-py", "extractor apply, sources only", (), _extractor_sources),
    Command("extractor1", "extractor apply --jobs 1", (), _extractor_one_process),
    Command("extractor", "**extractor apply**", (), _extractor),
)
COMMAND_KEYS = tuple(c.key for c in COMMANDS)


@dataclass
class Cell:
    """All runs of one command on one input and target."""

    samples: list[measure.Sample] = field(default_factory=list)
    failed: str = ""
    tree: tuple[int, int] | None = None

    def median(self) -> float | None:
        return statistics.median(s.wall for s in self.samples) if self.samples else None

    def median_cpu(self) -> float | None:
        cpu = [s.cpu for s in self.samples if s.cpu is not None]
        return statistics.median(cpu) if cpu else None

    def peak_rss(self) -> int | None:
        rss = [s.rss_kib for s in self.samples if s.rss_kib is not None]
        return max(rss) if rss else None


Results = dict[tuple[str, str, str], Cell]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# the machine


def _first_line(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0] if text else "?"


def _proc_field(path: str, key: str) -> str:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def machine() -> dict[str, str]:
    mem_kib = _proc_field("/proc/meminfo", "MemTotal").split()[0]
    versions = {
        "tar": ["tar", "--version"],
        "pigz": ["pigz", "--version"],
        "bsdtar": ["bsdtar", "--version"],
        "zstd": ["zstd", "--version"],
        "umoci": ["umoci", "--version"],
    }
    tools = [
        _first_line(argv).replace("*** ", "").split(", by")[0]
        for name, argv in versions.items()
        if shutil.which(name)
    ]
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _proc_field("/proc/cpuinfo", "model name"),
        "nproc": str(len(os.sched_getaffinity(0))),
        "memory": f"{int(mem_kib) / 2**20:.1f} GiB" if mem_kib.isdigit() else "?",
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "tools": "; ".join(tools),
        "user": "root" if os.geteuid() == 0 else "not root (extractor runs rootless)",
        "build": _extractor_build(),
    }


# ---------------------------------------------------------------------------
# running


def _targets(where: str, disk: Path) -> dict[str, Path]:
    out = {}
    if where in ("tmpfs", "both"):
        out["tmpfs"] = Path(f"/dev/shm/extractor-bench-{os.getpid()}")
    if where in ("disk", "both"):
        out["disk"] = disk / f"extractor-bench-{os.getpid()}"
    return out


def _warm(stack: stacks.Stack) -> None:
    """Reads the layer files once so that every command finds them in the page cache."""
    for layer in stack.layers:
        with open(layer.path, "rb") as f:
            while f.read(8 * MIB):
                pass


def run_all(
    stack_list: list[stacks.Stack],
    commands: list[Command],
    targets: dict[str, Path],
    runs: int,
    use_gnu_time: bool,
) -> Results:
    results: Results = {}
    for target, root in targets.items():
        root.mkdir(parents=True, exist_ok=True)
        dest = str(root / "rootfs")
        for stack in stack_list:
            todo = [c for c in commands if c.argv(stack, dest) is not None]
            for c in todo:
                results[(target, stack.name, c.key)] = Cell()
            _warm(stack)
            for rep in range(runs):
                shift = rep % len(todo)
                line = []
                for c in todo[shift:] + todo[:shift]:  # a different order each repetition
                    cell = results[(target, stack.name, c.key)]
                    if cell.failed:
                        continue
                    measure.clear(dest)
                    os.mkdir(dest)
                    if target == "disk":
                        os.sync()
                    argv = c.argv(stack, dest)
                    assert argv is not None
                    sample = measure.run(argv, use_gnu_time)
                    if sample.returncode != 0:
                        cell.failed = f"exit {sample.returncode}: {sample.error}"
                        line.append(f"{c.key} FAILED")
                        continue
                    cell.samples.append(sample)
                    if cell.tree is None:
                        cell.tree = measure.tree_size(dest)
                    line.append(f"{c.key} {sample.wall:.2f}s")
                _log(f"[{target}] {stack.name} run {rep + 1}/{runs}: " + ", ".join(line))
            measure.clear(dest)
    return results


# ---------------------------------------------------------------------------
# reporting


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def inputs_table(stack_list: list[stacks.Stack]) -> list[str]:
    out = [
        "| input | layers | compressed MiB | tar MiB | entries | what |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in stack_list:
        out.append(
            f"| {s.name} | {len(s.layers)} | {s.size / MIB:.1f} | {s.tar_bytes / MIB:.1f} | "
            f"{s.entries:,} | {stacks.DESCRIPTIONS[s.name]} |"
        )
    return out


def results_table(
    results: Results, target: str, stack_list: list[stacks.Stack], commands: list[Command]
) -> list[str]:
    out = [
        "| input | command | median s | min s | vs tar | vs extractor | CPU s | peak RSS MiB "
        "| MiB/s | tree entries |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in stack_list:
        cells = {c.key: results.get((target, s.name, c.key)) for c in commands}
        base = next((cells[c.key].median() for c in commands if c.baseline and cells[c.key]), None)
        ours = cells["extractor"].median() if cells.get("extractor") else None
        first = True
        for c in commands:
            cell = cells[c.key]
            if cell is None:
                continue
            name = s.name if first else ""
            first = False
            if cell.failed:
                out.append(f"| {name} | {c.label} | failed (see notes) | | | | | | | |")
                continue
            med = cell.median()
            rss = cell.peak_rss()
            tree = f"{cell.tree[0]:,}" if cell.tree else "-"
            speed = s.tar_bytes / MIB / med if med else None
            out.append(
                f"| {name} | {c.label} | {_fmt(med)} | {_fmt(min(x.wall for x in cell.samples))}"
                f" | {_ratio(med, base)} | {_ratio(med, ours)} | {_fmt(cell.median_cpu())}"
                f" | {_fmt(rss / 1024 if rss else None, 1)} | {_fmt(speed, 0)} | {tree} |"
            )
    return out


def header(info: dict[str, str], args: argparse.Namespace) -> list[str]:
    """Who, where, when, and the command that reproduces the run."""
    out: list[str] = []
    if args.scale < 1 or args.runs < 3:
        out += [
            "**Not yet measured at full scale.** What follows is a **smoke run, not a "
            f"measurement** (scale {args.scale:g}, {args.runs} run(s), on a shared machine "
            f"with load {info['load']}): it shows that the harness works end to end. Run "
            "`make bench` on a quiet machine to replace this section.",
            "",
        ]
    return [
        *out,
        f"Run {info['date']} on {info['cpu']}, nproc {info['nproc']}, {info['memory']} "
        f"RAM, {info['kernel']}, Python {info['python']}, as {info['user']}; "
        f"load average at start {info['load']}.",
        f"Peers: {info['tools']}.",
        f"extractor: {info['build']}; the *sources only* row runs the same code interpreted "
        "(`EXTRACTOR_PURE=1`).",
        "",
        "Reproduce with:",
        "",
        "```sh",
        shlex.join([".venv/bin/python", "benchmarks/run.py", *args.argv]),
        "```",
    ]


def report(
    args: argparse.Namespace,
    stack_list: list[stacks.Stack],
    commands: list[Command],
    targets: dict[str, Path],
    results: Results,
    notes: list[str],
    use_gnu_time: bool,
) -> list[str]:
    """The inputs table, one results table per target, and the notes."""
    out = [
        f"Scale {args.scale:g}, {args.runs} run(s) of each command per input and target "
        f"(median and fastest shown), peak RSS from "
        f"{'GNU time %M' if use_gnu_time else 'wait4 rusage'}. *vs tar* is the median over "
        "the median of the `tar` row of the same input (`tar -xzf`, or `zstd -dc | tar -x` "
        "for zstd), *vs extractor* over extractor's: below 1 is faster.",
        "",
        *inputs_table(stack_list),
    ]
    for target, root in targets.items():
        out += ["", f"#### Target: {target} ({_fstype(root)})", ""]
        out += results_table(results, target, stack_list, commands)
    if notes:
        out += ["", *[f"- {n}" for n in notes]]
    return out


def _fstype(path: Path) -> str:
    best, kind = "", "?"
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                mount = parts[1]
                if str(path).startswith(mount.rstrip("/") + "/") and len(mount) >= len(best):
                    best, kind = mount, parts[2]
    except OSError:
        pass
    return f"{kind}, {path}" if best else str(path)


def _notes(results: Results, skipped: list[str]) -> list[str]:
    notes = [f"`{k}` skipped: not installed" for k in skipped]
    failures: dict[tuple[str, str, str], list[str]] = {}
    for (target, name, key), cell in results.items():
        if cell.failed:
            failures.setdefault((key, name, cell.failed), []).append(target)
    for (key, name, message), where in failures.items():
        notes.append(f"`{key}` failed on {name} ({', '.join(where)}): {message}")
    differ: dict[tuple[str, str], list[str]] = {}
    for (target, name, key), cell in results.items():
        ours = results.get((target, name, "extractor"))
        if key == "extractor" or not ours or not ours.tree or not cell.tree:
            continue
        if cell.tree != ours.tree:
            differ.setdefault((target, name), []).append(
                f"{key} {cell.tree[0]:,} entries / {cell.tree[1]:,} bytes"
            )
    for (target, name), what in differ.items():
        ours = results[(target, name, "extractor")].tree
        assert ours is not None
        notes.append(
            f"tree differs from extractor's ({ours[0]:,} entries / {ours[1]:,} bytes) on {name}"
            f" ({target}): " + "; ".join(what)
        )
    notes.append(
        "tree entries: what the first run left in the target (bytes: regular files, once per "
        "inode). The tar-like peers do not apply OCI whiteouts: on multi-layer they keep the "
        "deleted paths and write the `.wh.` markers as files, so their tree differs from "
        "extractor's and umoci's."
    )
    return notes


# ---------------------------------------------------------------------------
# memory flatness


def memory_check(
    stack: stacks.Stack, target: Path, gib: float, flat_mib: float
) -> tuple[list[str], bool]:
    """Unpacks an image of ``stack``'s layers repeated to about ``gib`` GiB, sampling RSS.

    The image is an OCI layout whose manifest lists the same blobs again and
    again, so a multi-GB image costs no disk; ``extractor unpack`` streams and
    verifies every one of them.
    """
    reps = max(1, round(gib * 2**30 / stack.tar_bytes))
    layers = [x.path for x in stack.layers] * reps
    target.mkdir(parents=True, exist_ok=True)
    dest = str(target / "rootfs")
    measure.clear(dest)
    layout = Path(stack.layout).parent / f"oci-x{reps}"
    stacks.write_layout(
        stacks.Stack(stack.name, stack.scale, stack.layers * reps, str(layout)), layout
    )
    argv = [*_extractor_argv(), "unpack", "-q", str(layout), dest]
    _log(f"memory: {len(layers)} layers, {reps * stack.tar_bytes / 2**30:.2f} GiB ...")
    curve = measure.sample_rss(argv)
    measure.clear(dest)
    streamed = reps * stack.tar_bytes / 2**30
    head = [
        f"#### Memory: extractor unpack of {stack.name} x {reps} "
        f"({len(layers)} layers, {streamed:.2f} GiB of tar) onto {target}",
        "",
    ]
    if curve.returncode != 0 or not curve.rss_kib:
        return [*head, f"failed: exit {curve.returncode}: {curve.error}"], False
    rss = [k / 1024 for k in curve.rss_kib]
    growth = flat_growth(rss)
    enough = growth is not None
    flat = growth is not None and growth <= flat_mib and max(rss) <= MAX_RSS_MIB
    verdict = ("**flat**" if flat else "**NOT flat**") if enough else "too short to judge"
    third = len(rss) // 3
    picks = rss
    if len(rss) > 24:
        picks = [rss[round(i * (len(rss) - 1) / 23)] for i in range(24)]
    lines = [
        *head,
        f"- {curve.wall:.1f} s, {len(rss)} samples of VmRSS every 0.2 s",
        f"- peak VmRSS {max(rss):.1f} MiB (VmHWM {curve.hwm_kib / 1024:.1f} MiB)",
        f"- peak of the middle third of the run {max(rss[third : 2 * third], default=0):.1f} MiB,"
        f" of the last third {max(rss[2 * third :], default=0):.1f} MiB:"
        f" growth {growth or 0:+.1f} MiB: {verdict}"
        f" (growth within {flat_mib:g} MiB, peak within {MAX_RSS_MIB} MiB)",
        f"- RSS in MiB at {len(picks)} evenly spaced samples: "
        + " ".join(f"{x:.0f}" for x in picks),
    ]
    return lines, flat


def flat_growth(rss: list[float]) -> float | None:
    """How far the peak of the last third of ``rss`` rises above the middle third's.

    Flat means bounded whatever the stream's length. The first third is start-up
    and warm-up: the interpreter, then the queues of 1 MiB chunks and malloc's two
    arenas filling up to what they keep (32 MiB of freed chunks each, at most).
    After that a bounded process holds its level and a leak keeps rising, so a
    leak of G MiB over the run shows as about G / 3. ``None`` when there are
    too few samples to judge.
    """
    third = len(rss) // 3
    if third < 5:
        return None
    return max(rss[2 * third :]) - max(rss[third : 2 * third])


# ---------------------------------------------------------------------------
# the README


def write_readme(block: list[str]) -> None:
    text = README.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{README}: markers {START} / {END} not found")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    README.write_text(before + START + "\n" + "\n".join(block) + "\n" + END + after)
    _log(f"wrote the results into {README}")


# ---------------------------------------------------------------------------


def _csv(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(allowed)}")
        return items

    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark `extractor apply` against tar, pigz, bsdtar, zstd, umoci and "
        "Python's tarfile.",
    )
    p.add_argument("--scale", type=float, help="size of the inputs (default 1; --quick: 0.02)")
    p.add_argument("--runs", type=int, help="runs per command (default 5; --quick: 1)")
    p.add_argument("--where", choices=("tmpfs", "disk", "both"), default="both")
    p.add_argument(
        "--inputs",
        type=_csv(stacks.NAMES),
        default=list(stacks.NAMES),
        help=f"comma-separated subset of {','.join(stacks.NAMES)}",
    )
    p.add_argument(
        "--commands",
        type=_csv(COMMAND_KEYS),
        default=list(COMMAND_KEYS),
        help=f"comma-separated subset of {','.join(COMMAND_KEYS)}",
    )
    p.add_argument("--quick", action="store_true", help="smoke test: scale 0.02, 1 run")
    p.add_argument("--memory", action="store_true", help="also check that RSS stays flat")
    p.add_argument("--memory-gib", type=float, help="GiB streamed (default 4; --quick: 1)")
    p.add_argument(
        "--flat-mib",
        type=float,
        default=8.0,
        help="allowed rise of the last third's peak RSS over the middle third's (MiB)",
    )
    p.add_argument("--no-bench", action="store_true", help="skip the timed table (--memory)")
    p.add_argument(
        "--no-gnu-time", action="store_true", help="measure RSS with wait4 even if GNU time exists"
    )
    p.add_argument("--write-readme", action="store_true", help="update benchmarks/README.md")
    p.add_argument("--work", type=Path, default=HERE / "work", help="where inputs are cached")
    p.add_argument("--disk-dir", type=Path, help="parent of the disk target (default: --work)")
    args = p.parse_args(argv)
    args.argv = argv
    if args.scale is None:
        args.scale = 0.02 if args.quick else 1.0
    if args.runs is None:
        args.runs = 1 if args.quick else 5
    if args.memory_gib is None:
        args.memory_gib = 1.0 if args.quick else 4.0
    if args.scale <= 0 or args.runs < 1:
        p.error("--scale must be > 0 and --runs >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    info = machine()
    use_gnu_time = not args.no_gnu_time and measure.have_gnu_time()
    skipped = []
    commands = []
    for c in COMMANDS:
        if c.key not in args.commands and c.key != "extractor":
            continue
        missing = [t for t in c.tools if shutil.which(t) is None]
        if missing:
            skipped.append(f"{c.key} ({', '.join(missing)})")
            continue
        commands.append(c)
    names = [] if args.no_bench else list(args.inputs)
    if args.memory and "big-files" not in names:
        names.append("big-files")
    built = stacks.build(args.work / "inputs", names, args.scale, _log)
    stack_list = [built[n] for n in args.inputs if n in built]
    targets = _targets(args.where, args.disk_dir or args.work)
    block = header(info, args)
    ok = True
    try:
        if not args.no_bench:
            results = run_all(stack_list, commands, targets, args.runs, use_gnu_time)
            notes = _notes(results, skipped)
            block += [
                "",
                *report(args, stack_list, commands, targets, results, notes, use_gnu_time),
            ]
            ok = not any(c.failed for (_, _, k), c in results.items() if k == "extractor")
        if args.memory and "big-files" in built:
            target = next(iter(targets.values()))
            lines, flat = memory_check(built["big-files"], target, args.memory_gib, args.flat_mib)
            block += ["", *lines]
            ok = ok and flat
    finally:
        for root in targets.values():
            measure.clear(str(root))
    print("\n".join(block))
    if args.write_readme:
        write_readme(block)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
