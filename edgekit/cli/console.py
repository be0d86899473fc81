"""The consoles: results on stdout; progress, messages and errors on stderr (edgekit.progress's), so --json
output stays clean."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

from edgekit.progress import err

out = Console(highlight=False, soft_wrap=True)

__all__ = ["err", "out", "print_json"]


def print_json(data: Any) -> None:
    # Plain print rather than rich: scripts parse this, so no markup or wrapping.
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()
