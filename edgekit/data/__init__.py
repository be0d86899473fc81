"""What edgekit ships besides code, found only through importlib.resources:

targets/<name>.yaml       target descriptors (specs, runtimes, how a host matches)
luts/<key>.json           latency LUTs: the measured reference and the estimates scaled from it
recipes/<name>.yaml       training recipes
plans/<model>/            stage-1 plans of the built-in models
checkpoints/<model>/      elastic checkpoints of the built-in models
Dockerfile.jetson         the Jetson image a deployment is built into
"""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import IntegrityError


def shipped(*parts: str) -> Path:
    """A shipped file or folder as a path on disk. Plans, checkpoints and the Dockerfile are read by tools
    that want real files, so edgekit installs as plain files (never from a zip archive)."""
    from importlib.resources import files

    ref = files(__name__).joinpath(*parts)
    if not isinstance(ref, Path):
        raise IntegrityError(f"edgekit's shipped data is not on disk ({ref}): install edgekit unzipped")
    return ref
