"""Fixtures of the evaluation tests: one torch thread, and the tiny model loaded once per module."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The tiny model's matrices are 64 wide: thread hand-offs cost more than the math, and on a busy
    # 2-core host a second thread waiting for a core turns milliseconds into seconds.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def loaded(tiny_llama_dir: Path):
    from edgekit.models.reference import load

    model, tokenizer, _ = load(str(tiny_llama_dir))
    return model, tokenizer
