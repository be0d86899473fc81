"""Fixtures of the container tests: one deployment folder and one real `container build --dry-run` per module."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from container_helpers import make_deployment


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_deployment(tmp_path_factory.mktemp("dep") / "tiny-d4-w67")


@pytest.fixture(scope="module")
def dry_build(deployment: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """One real `edgekit container build --dry-run --json`: the context is written, no docker runs."""
    from edgekit.cli import main

    ctx = tmp_path_factory.mktemp("ctx") / "context"
    args = ["container", "build", "--target", "orin", "--deployment", str(deployment), "--context-out", str(ctx),
            "--dry-run", "--json"]  # fmt: skip
    out = _run_main(main, args)
    return json.loads(out), ctx


def _run_main(main, args: list[str]) -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            main(args)
        except SystemExit as exc:
            assert exc.code in (0, None), f"exit {exc.code}"
    return buf.getvalue()
