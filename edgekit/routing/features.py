"""Router features: what a prompt looks like to the computation every menu shape starts with.

The menu shapes share their first layers (the DP keeps the early layers at every depth) and every width is a
prefix of the wider ones, so the layers in the common prefix of every menu shape's layer set, at the narrowest
menu width, are weights every menu shape holds. The extractor is a standard Hugging Face Llama of just those
layers (its SMOL mix merged), so it runs beside any runtime; a prompt's features are the mean of its hidden
states there (after the final RMSNorm, with unit weight) and the log of its length.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import UsageError
from edgekit.shapes import Shape

PREFIX_LAYERS = 2  # at most this many shared layers: enough to see the prompt, a small share of any shape's cost


def shared_prefix(layer_sets: dict[int, list[int]], menu: list[Shape], limit: int = PREFIX_LAYERS) -> list[int]:
    """The layers every menu shape runs first, in order: the common prefix of their layer lists (at most `limit`)."""
    lists = [sorted(layer_sets[s.depth]) for s in menu]
    prefix: list[int] = []
    for column in zip(*lists, strict=False):
        if len(set(column)) != 1 or len(prefix) == limit:
            break
        prefix.append(column[0])
    if not prefix:
        raise UsageError(f"the menu shapes {', '.join(s.name for s in menu)} share no first layer to route on")
    return prefix


def narrowest(menu: list[Shape], depth: int) -> Shape:
    """A shape of `depth` layers at the widths every menu shape contains: the smallest FFN share and head count."""
    return Shape(depth, min(s.ffn for s in menu), min(s.heads for s in menu))


class FeatureExtractor:
    """The shared prefix as a transformers model: `features(ids)` for one prompt."""

    def __init__(self, model: Any) -> None:
        self.model = model.eval()

    @classmethod
    def from_elastic(cls, elastic: Any, plan: Any, base_config: dict[str, Any], menu: list[Shape]) -> FeatureExtractor:
        import torch

        from edgekit.elastic.extract import elastic_state

        layers = shared_prefix(plan.layer_sets, menu)
        shape = narrowest(menu, len(layers))
        with torch.no_grad():
            state = elastic_state(elastic.eval(), shape, layers)
        state["model.norm.weight"] = torch.ones_like(state["model.norm.weight"])
        return cls(build_model(base_config, plan.geometry, shape, layers, state))

    @classmethod
    def load(cls, folder: Path) -> FeatureExtractor:
        import torch
        from transformers import AutoModelForCausalLM

        return cls(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32))

    def save(self, folder: Path) -> None:
        import torch

        self.model.to(torch.float16).save_pretrained(folder, safe_serialization=True)
        self.model.to(torch.float32)

    @property
    def layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    def features(self, ids: list[int]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            hidden = self.model.model(input_ids=torch.tensor([ids])).last_hidden_state[0].float()
        return np.concatenate([hidden.mean(0).numpy(), [math.log(len(ids))]]).astype(np.float64)


def build_model(base_config: dict[str, Any], geometry: Any, shape: Shape, layers: list[int], state: dict) -> Any:
    from edgekit.elastic.extract import hf_model

    return hf_model(base_config, geometry, shape, layers, {k: v.float() for k, v in state.items()})
