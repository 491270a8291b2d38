"""``extractor conformance``: grading unpackers over the corpus, with a canary for escapes.

The extractor profile must pass every case; GNU tar (layer by layer) must fail the
whiteout cases and be caught escaping by the canary; umoci runs when installed and its
results are recorded, not asserted. Hand-written commands check each verdict the runner
can give (PASS, FAIL, ESCAPE, TIMEOUT) and the placeholder quoting.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import IS_ROOT

from extractor.conformance import (
    ESCAPE,
    FAIL,
    PASS,
    SKIP,
    TIMEOUT,
    CaseResult,
    expand,
    profiles,
    render_table,
    run_case,
    run_conformance,
    summary_line,
)
from extractor.corpus import load_cases

CASES = {c.name: c for c in load_cases()}
MODULE = [sys.executable, "-m", "extractor"]


def by_name(results: list[CaseResult]) -> dict[str, CaseResult]:
    """Results keyed by case name."""
    return {r.name: r for r in results}


def test_extractor_profile_passes_every_case(tmp_path: Path) -> None:
    """``--profile extractor --json`` passes every case, exits 0, and says so in JSON."""
    proc = subprocess.run(
        [*MODULE, "conformance", "--profile", "extractor", "--json"],
        capture_output=True,
        timeout=120,
        env={"TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()
    doc = json.loads(proc.stdout)
    failed = [(c["name"], c["detail"]) for c in doc["cases"] if c["status"] not in (PASS, SKIP)]
    assert failed == []
    assert proc.returncode == 0
    assert doc["schema"] == "extractor.conformance/v1" and doc["passed"] is True
    skipped = 0 if IS_ROOT else sum(c.needs_root for c in CASES.values())
    assert doc["counts"][PASS] == len(CASES) - skipped
    assert list(tmp_path.iterdir()) == []  # every throwaway directory removed


TAR_FAILS = {
    "whiteout-lower-file",
    "whiteout-lower-dir-tree",
    "whiteout-symlink-only-link",
    "opaque-before-siblings",
    "opaque-after-siblings",
    "aufs-plnk-hardlink",
    "malformed-whiteout-dotdot",
    "hardlink-before-target",
}
# GNU tar follows symlinks it extracted itself: the canary sees the writes.
TAR_ESCAPES = {
    "escape-symlink-parent-earlier-layer": "outside/passwd changed",
    "escape-relative-symlink-climb": "outside/victim changed",
    "escape-hardlink-through-symlink": "outside/victim changed",
    "escape-whiteout-under-symlink": "outside/.wh.victim created",
}


@pytest.mark.peer
def test_tar_profile_fails_whiteouts_and_is_caught_escaping(tmp_path: Path) -> None:
    """GNU tar layer by layer keeps whiteout files and writes through symlinks: ESCAPE."""
    results = by_name(
        run_conformance(list(CASES.values()), profiles()["tar"], 30, None, str(tmp_path))
    )
    for name in TAR_FAILS:
        assert results[name].status in (FAIL, ESCAPE), (name, results[name])
    for name, change in TAR_ESCAPES.items():
        assert results[name].status == ESCAPE, (name, results[name])
        assert change in results[name].detail
    assert results["whiteout-lower-file"].detail.startswith(".wh.a: unexpected file")
    assert results["entry-types"].status == PASS
    print(render_table(list(results.values()), "tar"))


@pytest.mark.peer
@pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci is not installed")
def test_umoci_profile_runs(tmp_path: Path) -> None:
    """``--profile umoci`` unpacks the OCI layouts (tag 'case'); failures are recorded only."""
    if not IS_ROOT:
        pytest.skip("umoci raw unpack without --rootless needs uid 0")
    results = run_conformance(list(CASES.values()), profiles()["umoci"], 30, None, str(tmp_path))
    got = by_name(results)
    # The profile's command is right: plain cases unpack and match.
    for name in ("entry-types", "whiteout-lower-dir-tree", "opaque-before-siblings"):
        assert got[name].status == PASS, got[name]
    assert all(r.status != TIMEOUT for r in results)
    print(render_table(results, "umoci"))


# -- each verdict, from hand-written commands ----------------------------------------------------


@pytest.mark.parametrize(
    ("case", "command", "status", "detail"),
    [
        ("whiteout-lower-file", "true", FAIL, "b: missing"),
        ("whiteout-lower-file", "echo b > {dest}/b", FAIL, "b: content"),
        ("whiteout-lower-file", "printf b > {dest}/b", PASS, ""),
        ("whiteout-lower-file", "echo oops >&2; exit 7", FAIL, "exit 7: oops"),
        ("hardlink-missing-target", "exit 3", PASS, "refused (exit 3)"),
        ("hardlink-missing-target", "true", FAIL, "exit 0; expected a refusal"),
        ("hardlink-missing-target", "echo x > {dest}/../../../outside/victim; exit 3", ESCAPE, ""),
        ("whiteout-lower-file", "printf b > {dest}/b; touch {dest}/../escape", ESCAPE, ""),
        (
            "whiteout-lower-file",
            "printf b > {dest}/b; chmod 600 {dest}/../../../outside/passwd",
            ESCAPE,
            "outside/passwd changed",
        ),
        (
            "whiteout-lower-file",
            "printf b > {dest}/b; rm {dest}/../../../outside/dir/file",
            ESCAPE,
            "outside/dir/file removed",
        ),
        ("whiteout-lower-file", "sleep 30", TIMEOUT, "killed after 0.5 s"),
    ],
    ids=[
        "nothing-written",
        "wrong-content",
        "right-tree",
        "command-fails",
        "refusal",
        "no-refusal",
        "refusal-but-escape",
        "created-beside-root",
        "chmod-canary",
        "removed-canary",
        "timeout",
    ],
)
def test_verdicts(case: str, command: str, status: str, detail: str, tmp_path: Path) -> None:
    """A hand-written unpacker command gets the verdict its effect deserves."""
    result = run_case(CASES[case], command, timeout=0.5, tmpdir=str(tmp_path))
    assert result.status == status, result
    assert detail in result.detail
    assert list(tmp_path.iterdir()) == []


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    """A command that forks a sleeper is killed with its children at the timeout."""
    marker = tmp_path / "alive"
    command = f"(sleep 2; touch {shlex.quote(str(marker))}) & wait"
    (tmp_path / "work").mkdir()
    result = run_case(CASES["whiteout-lower-file"], command, 0.3, str(tmp_path / "work"))
    assert result.status == TIMEOUT
    subprocess.run(["sleep", "2.5"], check=True)
    assert not marker.exists()


def test_expand_shell_quotes_every_placeholder() -> None:
    """Paths with spaces and quotes survive the shell as single words, layers in order."""
    line = expand(
        "cmd {image}:case {docker} {dest} -- {layers}",
        image="/a b/oci",
        docker="/it's/d.tar",
        layers=["/l 1.tar", "/l'2.tar"],
        dest="/x y/rootfs",
    )
    assert shlex.split(line) == [
        "cmd",
        "/a b/oci:case",
        "/it's/d.tar",
        "/x y/rootfs",
        "--",
        "/l 1.tar",
        "/l'2.tar",
    ]


def test_summary_line_counts() -> None:
    """The summary counts passes, failures, escapes, timeouts and skips."""
    results = [
        CaseResult("a", "r", PASS, "", "tree", 0, 0.0),
        CaseResult("b", "r", ESCAPE, "", "tree", 0, 0.0),
        CaseResult("c", "r", TIMEOUT, "", "tree", None, 0.0),
        CaseResult("d", "r", SKIP, "", "tree", None, 0.0),
    ]
    assert summary_line(results, "x") == (
        "x: 1/4 passed, 2 failed (1 escapes, 1 timeouts), 1 skipped"
    )


# -- the command line -----------------------------------------------------------------------------


def test_cli_table_and_exit_status_for_a_failing_unpacker(tmp_path: Path) -> None:
    """A failing unpacker gets a table with its verdicts, a summary, and exit status 1."""
    proc = subprocess.run(
        [
            *MODULE,
            "conformance",
            "--unpacker",
            "true",
            "--case",
            "whiteout-lower-file",
            "--case",
            "hardlink-missing-target",
        ],
        capture_output=True,
        timeout=60,
        env={"TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    out = proc.stdout.decode()
    assert proc.returncode == 1, proc.stderr
    assert "whiteout-lower-file" in out and "b: missing" in out
    assert "exit 0; expected a refusal (bad-input)" in out
    assert out.rstrip().endswith("unpacker: 0/2 passed, 2 failed (0 escapes, 0 timeouts)")


@pytest.mark.parametrize(
    "args",
    [
        ["conformance"],
        ["conformance", "--profile", "tar", "--unpacker", "true"],
        ["conformance", "--profile", "nope"],
        ["conformance", "--profile", "tar", "--case", "no-such-case"],
    ],
    ids=["no-unpacker", "both", "bad-profile", "unknown-case"],
)
def test_cli_usage_errors(args: list[str]) -> None:
    """Missing, conflicting or unknown choices are usage errors (exit 2)."""
    proc = subprocess.run([*MODULE, *args], capture_output=True, timeout=60)
    assert proc.returncode == 2
    assert b"Traceback" not in proc.stderr
