"""Which Python distributions are installed, and their versions: what runtime probes and every record of a
measurement ("ran on onnxruntime-genai 0.13.1") read."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def installed_version(*dists: str) -> tuple[str | None, str | None]:
    """(distribution, version) of the first of `dists` that is installed, else (None, None): a runtime often
    ships under several names (onnxruntime-genai, onnxruntime-genai-cuda, ...)."""
    for name in dists:
        try:
            return name, version(name)
        except PackageNotFoundError:
            continue
    return None, None


def versions(*dists: str) -> dict[str, str]:
    """name -> version of each of `dists` that is installed."""
    found = {}
    for name in dists:
        _, ver = installed_version(name)
        if ver is not None:
            found[name] = ver
    return found
