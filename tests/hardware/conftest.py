"""Fixtures of the hardware tests: a recorded Orin NX's identifying files under a fake root."""

from __future__ import annotations

from pathlib import Path

import pytest
from hardware_helpers import L4T_LINE


@pytest.fixture
def orin_root(tmp_path: Path) -> Path:
    """The two files a board is recognised by, as an Orin NX developer kit has them."""
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    (tmp_path / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson Orin NX Engineering Reference Developer Kit\x00")
    (tmp_path / "etc/nv_tegra_release").write_text(L4T_LINE + "\n")
    return tmp_path
