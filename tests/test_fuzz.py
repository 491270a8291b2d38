"""Fuzzing under hypothesis: mutated layers and image documents meet only clean outcomes.

The targets and mutations live in tests/fuzz_harness.py (which also runs
longer: ``python tests/fuzz_harness.py --seconds 600``). Here hypothesis
drives them with a fixed budget (derandomized, no example database, so a CI
run is reproducible and leaves no files behind); the whole file runs in well
under two minutes. Acceptable outcomes: success or an ``ExtractorError``
subclass with a one-line message. Anything else, a hang (SIGALRM) or a change
to the canary beside DEST fails. Every input saved in testdata/fuzz-crashes/
is replayed as a regression case.
"""

from __future__ import annotations

from pathlib import Path

import fuzz_harness as fh
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

COMMON = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SEEDS = fh.seed_tars()
COMPRESSIONS = ["none", "gzip", "zstd"]

ops = st.lists(
    st.tuples(
        st.sampled_from(fh.OPS),
        st.integers(0, (1 << 40) - 1),
        st.one_of(
            st.binary(min_size=1, max_size=12),
            st.sampled_from([b"\xff" * 12, b"\x80" + bytes(11), b"7" * 11 + b"\0", b"-1 "]),
        ),
    ),
    min_size=1,
    max_size=4,
)


@settings(COMMON, max_examples=3000)
@given(
    seed=st.integers(0, len(SEEDS) - 1),
    compression=st.sampled_from(COMPRESSIONS),
    mutations=ops,
    other=st.integers(0, len(SEEDS) - 1),
    rootless=st.booleans(),
)
def test_mutated_layer_stream(
    seed: int, compression: str, mutations: list[fh.Op], other: int, rootless: bool
) -> None:
    """A valid layer, compressed, then bit-flipped/truncated/spliced/edited: a clean outcome."""
    data = fh.compress(SEEDS[seed], compression)
    splice = fh.compress(SEEDS[other], compression)
    fh.check_layer(fh.mutate(data, mutations, splice), rootless=rootless)


@settings(COMMON, max_examples=3000)
@given(
    seed=st.integers(0, len(SEEDS) - 1),
    compression=st.sampled_from(COMPRESSIONS),
    mutations=ops,
)
def test_mutated_tar_then_compressed(seed: int, compression: str, mutations: list[fh.Op]) -> None:
    """Header edits in the tar itself, behind valid gzip/zstd framing: a clean outcome."""
    data = fh.mutate(SEEDS[seed], mutations, SEEDS[(seed + 1) % len(SEEDS)])
    fh.check_layer(fh.compress(data, compression))


@settings(COMMON, max_examples=1000)
@given(doc=st.sampled_from(fh.DOCS), mutations=ops, structural=st.integers(0, 1 << 32))
def test_mutated_image_document(doc: str, mutations: list[fh.Op], structural: int) -> None:
    """index.json, a manifest or a config mutated (bytes or JSON values): a clean outcome."""
    fh.check_image(doc, fh.mutate_json(fh.image_doc(doc), mutations, structural))


def test_unmutated_inputs_succeed() -> None:
    """The seeds themselves apply and unpack (so the mutations start from valid input)."""
    for data in SEEDS:
        for how in COMPRESSIONS:
            assert fh.check_layer(fh.compress(data, how)) == "ok"
    for doc in fh.DOCS:
        assert fh.check_image(doc, fh.image_doc(doc)) == "ok"


def _boom() -> None:
    raise ZeroDivisionError("not an ExtractorError")


def _never_returns() -> None:
    while True:
        pass


@pytest.mark.parametrize(
    ("run", "words"),
    [
        (_boom, "ZeroDivisionError"),
        (lambda: Path("/nonexistent-fuzz-path").stat(), "FileNotFoundError"),
    ],
    ids=["foreign-exception", "oserror"],
)
def test_guard_reports_foreign_exceptions(tmp_path: Path, run: object, words: str) -> None:
    """The harness turns an exception that is not an ExtractorError into a failure."""
    with pytest.raises(fh.FuzzError, match=words):
        fh._guarded(run, tmp_path)


def test_guard_reports_an_escape(tmp_path: Path) -> None:
    """The harness sees a write into the canary beside DEST."""
    with pytest.raises(fh.FuzzError, match="ESCAPE"):
        fh._guarded(lambda: (tmp_path / "outside" / "victim").write_bytes(b"evil"), tmp_path)


def test_guard_reports_a_hang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness stops a target that never returns, and reports a hang."""
    monkeypatch.setattr(fh, "DEADLINE", 0.2)
    with pytest.raises(fh.FuzzError, match="no answer"):
        fh._guarded(_never_returns, tmp_path)


CRASHES = sorted(fh.CRASHES.glob("*")) if fh.CRASHES.is_dir() else []


@pytest.mark.parametrize("path", CRASHES, ids=[p.name for p in CRASHES])
def test_saved_fuzz_input(path: Path) -> None:
    """An input the fuzzer once broke the engine with now ends in a clean outcome."""
    fh.replay(path)
