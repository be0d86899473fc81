"""Where edgekit keeps its files: $EDGEKIT_HOME, else the platform's user cache dir."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def home() -> Path:
    env = os.environ.get("EDGEKIT_HOME")
    root = Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("edgekit"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def models_dir() -> Path:
    path = home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def user_registry_file() -> Path:
    """Extra model entries a user (or a test) declares, same schema as the built-in registry."""
    return home() / "models.yaml"


def datasets_dir() -> Path | None:
    """$EDGEKIT_DATASETS: the folder a recipe's relative data paths (training text, evaluation sets) are read
    from when no --data-dir is given; None when unset."""
    env = os.environ.get("EDGEKIT_DATASETS")
    return Path(env).expanduser() if env else None
