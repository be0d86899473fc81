"""Shapes: depth x width, written `d20-w75`, and how a width percentage maps to a layer's dimensions.

Width rule (one width for every kept layer, see DESIGN.md "Deploy"):
- FFN channels = round(intermediate_size * w / 100) to the nearest multiple of `ffn_multiple`
  (64 by default: the tile size int4 and tensor-core kernels like), at least one multiple, at most
  intermediate_size.
- Attention keeps every KV head (so the KV cache layout and GQA stay valid) and keeps
  q = max(1, round_half_up(heads_per_group * w / 100)) query heads in each KV group; a subnet has
  q * num_kv_heads attention heads. Head dim is unchanged.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from edgekit.errors import UsageError

SHAPE_RE = re.compile(r"^d(\d+)-w(\d+)$")


@dataclass(frozen=True, order=True)
class Shape:
    depth: int
    width: int  # percent of the base model's FFN channels and query heads per KV group

    @property
    def name(self) -> str:
        return f"d{self.depth}-w{self.width}"

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class LayerDims:
    ffn: int
    heads_per_group: int
    num_kv_heads: int
    head_dim: int

    @property
    def num_heads(self) -> int:
        return self.heads_per_group * self.num_kv_heads


@dataclass(frozen=True)
class Geometry:
    """The base model's dimensions that shapes are cut from."""

    num_layers: int
    hidden: int
    ffn: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab: int
    ffn_multiple: int = 64

    @property
    def heads_per_group(self) -> int:
        return self.num_heads // self.num_kv_heads

    @classmethod
    def from_config(cls, config: Any, ffn_multiple: int = 64) -> Geometry:
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return cls(
            config.num_hidden_layers,
            config.hidden_size,
            config.intermediate_size,
            config.num_attention_heads,
            config.num_key_value_heads or config.num_attention_heads,
            head_dim,
            config.vocab_size,
            ffn_multiple,
        )

    def dims(self, width: int) -> LayerDims:
        multiple = min(self.ffn_multiple, self.ffn)
        ffn = int(round(self.ffn * width / 100 / multiple)) * multiple
        ffn = max(multiple, min(self.ffn, ffn))
        per_group = max(1, math.floor(self.heads_per_group * width / 100 + 0.5))
        return LayerDims(ffn, min(per_group, self.heads_per_group), self.num_kv_heads, self.head_dim)

    def width_problem(self, width: int) -> str | None:
        """Why `width` gives no valid layer (None when it does): too few heads or channels, or over 100."""
        if not 1 <= width <= 100:
            return f"w{width} is not a percentage between 1 and 100"
        per_group = math.floor(self.heads_per_group * width / 100 + 0.5)
        if per_group < 1:
            return (
                f"w{width} keeps {self.heads_per_group * width / 100:.2f} of the {self.heads_per_group} query heads "
                f"per KV group, which is no valid GQA layout; the smallest valid width is w{self.min_width()}"
            )
        multiple = min(self.ffn_multiple, self.ffn)
        if int(round(self.ffn * width / 100 / multiple)) < 1:
            return (
                f"w{width} keeps no block of {multiple} FFN channels; the smallest valid width is w{self.min_width()}"
            )
        return None

    def min_width(self) -> int:
        multiple = min(self.ffn_multiple, self.ffn)
        return next(
            w
            for w in range(1, 101)
            if math.floor(self.heads_per_group * w / 100 + 0.5) >= 1 and round(self.ffn * w / 100 / multiple) >= 1
        )

    def layer_params(self, width: int) -> int:
        d = self.dims(width)
        attn = self.hidden * self.head_dim * (2 * d.num_heads + 2 * d.num_kv_heads)
        return attn + 3 * self.hidden * d.ffn + 2 * self.hidden

    def non_embedding_params(self, shape: Shape) -> int:
        return shape.depth * self.layer_params(shape.width) + self.hidden

    def width_for_fraction(self, fraction: float, min_width: int = 1) -> int:
        """The integer width whose full-depth non-embedding parameters are closest to `fraction` of the base."""
        full = self.non_embedding_params(Shape(self.num_layers, 100))
        return min(
            range(min_width, 101),
            key=lambda w: abs(self.non_embedding_params(Shape(self.num_layers, w)) / full - fraction),
        )


def parse_shape(text: str, num_layers: int | None = None) -> Shape:
    text = text.strip().lower()
    if text == "full":
        if num_layers is None:
            raise UsageError("'full' needs the base model's depth")
        return Shape(num_layers, 100)
    match = SHAPE_RE.match(text)
    if not match:
        raise UsageError(f"cannot parse shape '{text}': write depth and width as d20-w75, or 'full'")
    return Shape(int(match.group(1)), int(match.group(2)))


def parse_grid(text: str, num_layers: int | None = None) -> list[Shape]:
    """Comma-separated shapes, or a product 'd30,24,20 x w100,75' (depth list x width list)."""
    text = text.strip().lower()
    if " x " in text:
        depths, widths = (part.strip() for part in text.split(" x ", 1))
        ds = [int(d) for d in depths.lstrip("d").split(",")]
        ws = [int(w) for w in widths.lstrip("w").split(",")]
        return [Shape(d, w) for d in ds for w in ws]
    return [parse_shape(part, num_layers) for part in text.split(",") if part.strip()]
