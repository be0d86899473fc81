"""edgekit: one elastic checkpoint, the right subnet for every edge device under a latency budget.

import edgekit
dep = edgekit.deploy("orin", "40ms")            # or target="host", budget="25tok/s,mem<1GB", ...
print(dep.shape, dep.path, dep.manifest["predicted"])
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("edgekit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+local"

if TYPE_CHECKING:
    from edgekit.deployment.pipeline import Deployment


def deploy(target: str, budget: str, out: str | Path | None = None, **options: Any) -> Deployment:
    """The Python face of `edgekit deploy`: the same choices, the same folder, the Deployment back.

    `options` are DeployRequest's fields: runtime, precision, elastic, plan, model, prompt_len, gen_len,
    metric, dev_text, verify, force."""
    from edgekit.deployment.budget import parse_budget
    from edgekit.deployment.pipeline import DeployRequest
    from edgekit.deployment.pipeline import deploy as run

    return run(DeployRequest(target=target, budget=parse_budget(budget), out=Path(out) if out else None, **options))


__all__ = ["__version__", "deploy"]
