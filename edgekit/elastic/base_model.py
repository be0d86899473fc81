"""The plan's base model: find its weights, check they are the ones the plan was made for, load them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.elastic.plan import ModelIdentity, Permutations, Plan, load_permutations
from edgekit.errors import IntegrityError
from edgekit.models.reference import ModelRef, check_fits_memory, local_folder, resolve
from edgekit.models.weights import Weights, read_config, weights_digest


def identity(model_ref: ModelRef, folder: Path) -> ModelIdentity:
    config = read_config(folder)
    ref = model_ref.name if model_ref.kind == "cache" else model_ref.source
    return ModelIdentity(model_ref.name, ref, weights_digest(folder), (config.get("architectures") or ["?"])[0])


def base_folder(plan: Plan, model: str | None = None) -> Path:
    """The base model's folder, verified against the plan's weights digest."""
    folder = local_folder(resolve(model or plan.model.ref))
    read_config(folder)
    digest = weights_digest(folder)
    if digest != plan.model.digest:
        raise IntegrityError(
            f"plan {plan.name} was made for {plan.model.name} (weights {plan.model.digest[:12]}), "
            f"but {folder} holds other weights ({digest[:12]}): make a plan for it with `edgekit elastic plan`"
        )
    return folder


def load_elastic(plan: Plan, model: str | None = None, device: str = "cpu", perms: Permutations | None = None) -> Any:
    """An ElasticModel on the plan's permuted base weights (`perms` for a plan held in memory)."""
    from transformers import AutoConfig

    from edgekit.elastic.model import ElasticModel
    from edgekit.elastic.width import permute_state

    folder = base_folder(plan, model)
    check_fits_memory(folder)
    perms = perms if perms is not None else load_permutations(plan)
    state = permute_state(Weights(folder).state(), plan.geometry, perms.ffn, perms.heads)
    config = AutoConfig.from_pretrained(folder)
    elastic = ElasticModel.from_hf_state(config, state, plan.layer_sets)
    elastic.skips = {d: plan.skips_at(d) for d in plan.depth.skips}
    return elastic.to(device).eval()
