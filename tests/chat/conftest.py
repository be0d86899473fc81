"""Fixtures of the chat tests: a conversation store (the tiny torch session and tokenizer are in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit.chat.store.conversations import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "conversations")
