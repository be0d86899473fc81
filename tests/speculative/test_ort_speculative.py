"""Speculation through ONNX Runtime GenAI: the draft is a second, smaller session; each verifier pass reads the
drafted tokens as one chunk (append_tokens) and rejected ones are cut from both caches (rewind_to)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("onnxruntime_genai")

from edgekit.engines import Sampling, get_engine  # noqa: E402
from edgekit.engines.base import timed_stream  # noqa: E402
from edgekit.speculative import SpeculativeSession  # noqa: E402


@pytest.fixture(scope="module")
def ort_draft(tiny_plan: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """d3-w50 of the tiny plan (the verifier, tiny_ort_fp32, is its d4-w67) built for ONNX Runtime GenAI."""
    from edgekit.cli import main

    work = tmp_path_factory.mktemp("ort-draft")
    try:
        main(["elastic", "extract", "--plan", str(tiny_plan), "--shape", "d3-w50", "--out", str(work / "hf")])
    except SystemExit as exc:
        assert exc.code in (0, None)
    (work / "ort").mkdir()
    get_engine("ort").compile(work / "hf", work / "ort", "fp32", "cpu")
    return work / "ort"


@pytest.mark.parametrize("k", [1, 3, 5])
def test_ort_speculative_greedy_reply_is_the_verifiers_token_for_token(tiny_ort_fp32: Path, ort_draft: Path,
                                                                        k: int) -> None:  # fmt: skip
    ort = get_engine("ort")
    verifier = ort.open(tiny_ort_fp32)
    spec = SpeculativeSession(verifier, ort.open(ort_draft), k, "d3-w50")
    greedy = Sampling(max_new_tokens=24, min_new_tokens=24)
    for ids in ([5, 17, 42, 99, 7, 3, 250, 11], [9], [300, 301, 2, 77, 77, 77]):
        alone, _, _ = timed_stream(verifier, ids, greedy)
        assert list(spec.stream(ids, greedy)) == alone and len(alone) == 24
    s = spec.stats
    # a random tiny draft disagrees often: rejections (and so both rewinds) happened, and some drafts were kept
    assert s.drafted > s.accepted > 0 and s.tokens == 72 and s.rounds < 72
    assert spec.runtime == "ort" and spec.context_length == verifier.context_length


def test_the_verifier_as_its_own_ort_draft_keeps_every_drafted_token(tiny_ort_fp32: Path) -> None:
    ort = get_engine("ort")
    spec = SpeculativeSession(ort.open(tiny_ort_fp32), ort.open(tiny_ort_fp32), 4, "self")
    made = list(spec.stream([5, 17, 42], Sampling(max_new_tokens=21, min_new_tokens=21)))
    # 4 drafted and kept plus the verifier's own token per pass: 21 tokens in 5 passes (the last drafts none)
    assert len(made) == 21 and spec.stats.acceptance == 1.0 and spec.stats.rounds == 5


def test_sampled_ort_speculation_makes_a_reply_of_the_verifiers_tokens(tiny_ort_fp32: Path, ort_draft: Path) -> None:
    ort = get_engine("ort")
    spec = SpeculativeSession(ort.open(tiny_ort_fp32), ort.open(ort_draft), 3, "d3-w50")
    sampling = Sampling(max_new_tokens=16, min_new_tokens=16, temperature=0.8, seed=3)
    first, again = list(spec.stream([5, 17, 42], sampling)), list(spec.stream([5, 17, 42], sampling))
    assert first == again and len(first) == 16  # seeded: the same reply twice
    assert spec.first_token([5, 17, 42])[1] > 0
