"""Fixtures of the deployment tests: a real measured LUT of the tiny plan on this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

PROFILE_FAST = ["--runs", "1", "--new-tokens", "4", "--prompt-lens", "8,24"]


@pytest.fixture(scope="session")
def tiny_lut(tiny_plan: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real measured LUT of the tiny plan on this machine (ORT int4), written by `edgekit profile`."""
    import os

    from edgekit.cli import main

    home = tmp_path_factory.mktemp("lut-home")
    old = os.environ.get("EDGEKIT_HOME")
    os.environ["EDGEKIT_HOME"] = str(home)
    args = ["profile", "--target", "host", "--plan", str(tiny_plan), "--shapes", "d6-w100,d3-w100,d6-w50,d3-w50,d4-w67",
            "--fit-on", "d6-w100,d3-w100,d6-w50,d3-w50", *PROFILE_FAST, "--json"]  # fmt: skip
    try:
        main(args)
    except SystemExit as exc:
        assert exc.code in (0, None), f"profile failed with exit {exc.code}"
    finally:
        if old is None:
            os.environ.pop("EDGEKIT_HOME")
        else:
            os.environ["EDGEKIT_HOME"] = old
    luts = list((home / "luts").glob("*.json"))
    assert len(luts) == 1
    return luts[0]
