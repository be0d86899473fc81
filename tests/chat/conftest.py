"""Fixtures of the chat tests: the tiny model's torch session and tokenizer, and a conversation store."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit.chat.store.conversations import Store


@pytest.fixture(scope="module")
def torch_session(tiny_llama_dir: Path):
    from edgekit.engines import get_engine

    return get_engine("torch").open(tiny_llama_dir)


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_dir)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "conversations")
