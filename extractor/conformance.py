"""Run any unpacker over the corpus and grade it: ``extractor conformance``.

For each case a throwaway directory is laid out as::

    WORK/outside/            canary files (passwd, victim, dir/file): @OUTSIDE@
    WORK/in/layers/N.tar     the case's layers, oldest first
    WORK/in/oci              an OCI layout, image tagged "case"
    WORK/in/docker-save.tar  a docker save of the same image
    WORK/x/y/rootfs/         {dest}: empty; "../../../outside" from it is the canary

The command is run by ``sh -c`` with ``{image}``, ``{docker}``, ``{layers}``
and ``{dest}`` replaced by shell-quoted paths, in its own process group,
killed at the timeout. Everything in WORK except the destination is
snapshotted before and compared after (type, mode, owner, mtime, link
count, content, link target): any change is an ESCAPE, which fails the case
whatever else happened. Otherwise a case expecting a tree passes when the
command exits 0 and the destination matches (``corpus.check_tree``); a case
expecting a refusal passes when the command exits non-zero.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .corpus import Case, check_tree, materialize, write_canary

PASS, FAIL, ESCAPE, TIMEOUT, SKIP = "PASS", "FAIL", "ESCAPE", "TIMEOUT", "SKIP"
PLACEHOLDERS = ("{image}", "{docker}", "{layers}", "{dest}")
DEST_DEPTH = ("x", "y", "rootfs")  # so "../../../outside" from {dest} is the canary


def profiles() -> dict[str, str]:
    """The ready-made unpacker commands, by profile name."""
    python = shlex.quote(sys.executable)
    return {
        "umoci": "umoci raw unpack --image {image}:case {dest}",
        "tar": 'for l in {layers}; do tar -xpf "$l" -C {dest} --numeric-owner || exit 1; done',
        "extractor": f"{python} -m extractor apply -q --no-progress {{dest}} {{layers}}",
    }


@dataclass(slots=True)
class CaseResult:
    """How one case went: ``status`` is PASS, FAIL, ESCAPE, TIMEOUT or SKIP."""

    name: str
    rule: str
    status: str
    detail: str
    expected: str  # "tree" or the error kind expected
    exit_code: int | None
    seconds: float

    @property
    def passed(self) -> bool:
        """Whether the case counts as passed (skips do not fail a run)."""
        return self.status in (PASS, SKIP)


def expand(command: str, *, image: str, docker: str, layers: Sequence[str], dest: str) -> str:
    """``command`` with the placeholders replaced by shell-quoted paths."""
    values = {
        "{image}": shlex.quote(image),
        "{docker}": shlex.quote(docker),
        "{layers}": " ".join(shlex.quote(layer) for layer in layers),
        "{dest}": shlex.quote(dest),
    }
    for key, value in values.items():
        command = command.replace(key, value)
    return command


Snapshot = dict[str, tuple[object, ...]]


def snapshot(top: str, skip: str) -> Snapshot:
    """Everything observable about the tree at ``top``, except below ``skip``; never follows.

    The directories holding ``skip`` are recorded without their mtime and
    link count: an unpacker may remove its destination (umoci does on failure).
    """
    out: Snapshot = {}
    holders = set()
    holder = os.path.dirname(skip)
    while holder.startswith(top + os.sep):
        holders.add(holder)
        holder = os.path.dirname(holder)
    for dirpath, dirnames, filenames in os.walk(top):
        keep = []
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            if path == skip:
                continue
            st = os.lstat(path)
            extra: object = None
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256()
                with open(path, "rb") as f:
                    while chunk := f.read(1 << 16):
                        digest.update(chunk)
                extra = digest.hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(path)
            out[os.path.relpath(path, top)] = (
                st.st_mode,
                st.st_uid,
                st.st_gid,
                None if path in holders else st.st_mtime_ns,
                None if path in holders else st.st_nlink,
                extra,
            )
            if name in dirnames and stat.S_ISDIR(st.st_mode):
                keep.append(name)
        dirnames[:] = keep
    return out


def _changes(before: Snapshot, after: Snapshot) -> list[str]:
    out = [f"{p} removed" for p in sorted(before.keys() - after.keys())]
    out += [f"{p} created" for p in sorted(after.keys() - before.keys())]
    out += [f"{p} changed" for p in sorted(before.keys() & after.keys()) if before[p] != after[p]]
    return out


def _run(command: str, cwd: str, timeout: float) -> tuple[int | None, str]:
    """Run ``command`` with ``sh -c`` in its own process group; (exit code or None, stderr tail)."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            ["sh", "-c", command],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        err.seek(0)
        text = err.read().decode("utf-8", "replace").strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return code, lines[-1][:200] if lines else ""


def _make_writable(func: Any, path: str, exc: Any) -> None:
    parent = os.path.dirname(path)
    try:
        os.chmod(parent, stat.S_IMODE(os.lstat(parent).st_mode) | 0o700)
        func(path)
    except OSError:
        pass


def run_case(
    case: Case, command: str, timeout: float = 30.0, tmpdir: str | None = None
) -> CaseResult:
    """Run ``command`` over one case in a throwaway directory (in ``tmpdir``) and grade it."""
    expected = case.error or "tree"
    if case.needs_root and os.geteuid() != 0:
        return CaseResult(case.name, case.rule, SKIP, "needs root", expected, None, 0.0)
    work = tempfile.mkdtemp(prefix="extractor-conformance-", dir=tmpdir)
    os.chmod(work, 0o755)
    started = time.monotonic()
    try:
        outside = os.path.join(work, "outside")
        write_canary(outside)
        made = materialize(
            case,
            os.path.join(work, "in"),
            outside,
            oci="{image}" in command,
            docker="{docker}" in command,
            expected=False,
        )
        dest = os.path.join(work, *DEST_DEPTH)
        os.makedirs(dest)
        before = snapshot(work, dest)
        line = expand(
            command,
            image=made.oci or "",
            docker=made.docker or "",
            layers=made.layers,
            dest=dest,
        )
        code, err = _run(line, work, timeout)
        status, detail = _grade(case, code, err, dest, outside, timeout)
        escaped = _changes(before, snapshot(work, dest))
        if escaped:
            status = ESCAPE
            detail = "; ".join(escaped[:3]) + (" ..." if len(escaped) > 3 else "")
        return CaseResult(
            case.name, case.rule, status, detail, expected, code, time.monotonic() - started
        )
    finally:
        shutil.rmtree(work, onerror=_make_writable)


def _grade(
    case: Case, code: int | None, err: str, dest: str, outside: str, timeout: float
) -> tuple[str, str]:
    if code is None:
        return TIMEOUT, f"killed after {timeout:g} s"
    if case.error is not None:
        if code != 0:
            return PASS, f"refused (exit {code})"
        return FAIL, f"exit 0; expected a refusal ({case.error})"
    if code != 0:
        return FAIL, f"exit {code}: {err}" if err else f"exit {code}"
    problems = check_tree(dest, case.expected_tree(outside))
    if problems:
        more = f" (+{len(problems) - 2} more)" if len(problems) > 2 else ""
        return FAIL, "; ".join(problems[:2]) + more
    return PASS, ""


def run_conformance(
    cases: Sequence[Case],
    command: str,
    timeout: float = 30.0,
    on_result: Callable[[CaseResult], None] | None = None,
    tmpdir: str | None = None,
) -> list[CaseResult]:
    """Run ``command`` over every case, in order, each in a new directory in ``tmpdir``."""
    results = []
    for case in cases:
        result = run_case(case, command, timeout, tmpdir)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def counts(results: Sequence[CaseResult]) -> dict[str, int]:
    """How many results have each status (every status listed, zeros too)."""
    out = dict.fromkeys((PASS, FAIL, ESCAPE, TIMEOUT, SKIP), 0)
    for result in results:
        out[result.status] += 1
    return out


def summary_line(results: Sequence[CaseResult], label: str) -> str:
    """``LABEL: N/M passed, F failed (E escapes, T timeouts), S skipped``."""
    c = counts(results)
    failed = c[FAIL] + c[ESCAPE] + c[TIMEOUT]
    line = f"{label}: {c[PASS]}/{len(results)} passed, {failed} failed"
    line += f" ({c[ESCAPE]} escapes, {c[TIMEOUT]} timeouts)"
    if c[SKIP]:
        line += f", {c[SKIP]} skipped"
    return line


def render_table(results: Sequence[CaseResult], label: str) -> str:
    """A fixed-width table, one case per row, then the summary line."""
    width = max([len(r.name) for r in results] + [4])
    rows = [f"{'case':<{width}}  {'rule':<19}  {'expects':<9}  status   detail"]
    for r in results:
        rows.append(
            f"{r.name:<{width}}  {r.rule:<19}  {r.expected:<9}  {r.status:<7}  {r.detail}".rstrip()
        )
    rows.append("")
    rows.append(summary_line(results, label))
    return "\n".join(rows) + "\n"


def as_json(results: Sequence[CaseResult], label: str, command: str) -> str:
    """The ``--json`` document (schema ``extractor.conformance/v1``)."""
    doc = {
        "schema": "extractor.conformance/v1",
        "unpacker": label,
        "command": command,
        "counts": counts(results),
        "passed": all(r.passed for r in results),
        "cases": [{**asdict(r), "seconds": round(r.seconds, 3)} for r in results],
    }
    return json.dumps(doc, indent=2) + "\n"
