"""The budget grammar (edgekit.deployment.budget): parsing, refusals, relative budgets and violations."""

from __future__ import annotations

import pytest

from edgekit.deployment.budget import Budget, parse_budget
from edgekit.errors import UsageError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("40ms", Budget(ms_per_token=40.0, text="40ms")),
        ("40 ms/token", Budget(ms_per_token=40.0, text="40 ms/token")),
        ("25tok/s", Budget(ms_per_token=40.0, text="25tok/s")),
        ("ttft<300ms", Budget(ttft_ms=300.0, text="ttft<300ms")),
        ("ttft<1.5s", Budget(ttft_ms=1500.0, text="ttft<1.5s")),
        ("mem<2GB", Budget(mem_bytes=2e9, text="mem<2GB")),
        ("mem<512MiB", Budget(mem_bytes=512 * 2**20, text="mem<512MiB")),
        ("60%", Budget(relative=0.6, text="60%")),
        ("40ms, 20tok/s,mem<1G", Budget(ms_per_token=40.0, mem_bytes=1e9, text="40ms, 20tok/s,mem<1G")),
        ("50ms,30ms", Budget(ms_per_token=30.0, text="50ms,30ms")),
    ],
)
def test_budget_grammar(text: str, expected: Budget) -> None:
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["", "fast", "40", "40parsecs", "mem<2", "ttft>3ms", "0ms", "150%", "40ms,,"])
def test_budget_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(UsageError):
        parse_budget(text)


def test_relative_budget_resolves_against_the_full_model() -> None:
    b = parse_budget("50%,mem<1GB").resolve(full_ms_per_token=8.0)
    assert b.ms_per_token == pytest.approx(4.0) and b.relative is None and b.mem_bytes == 1e9
    assert parse_budget("50%,3ms").resolve(8.0).ms_per_token == pytest.approx(3.0)


def test_budget_violations_name_each_broken_term() -> None:
    b = parse_budget("40ms,ttft<300ms,mem<1GB")
    assert b.violations(39.0, 900.0, 200.0) == []
    assert b.violations(41.0, 1100.0, 400.0) == ["41.00 ms/token > 40", "first token 400 > 300 ms", "1100 MB > 1000 MB"]
    assert b.violations(41.0, 900.0) == ["41.00 ms/token > 40"]  # no first-token figure: that term is not judged
