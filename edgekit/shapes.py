"""Shapes: depth x FFN width x query heads per KV group, written `d24-f75-h2`, and how each maps to a layer.

- FFN: `f75` keeps round(intermediate_size x 75 / 100) channels rounded to the nearest multiple of
  `ffn_multiple` (64 by default: the tile int4 and tensor-core kernels like), at least one multiple and
  at most all of them. A shape's name carries the canonical percentage of the channels it keeps
  (round(100 x channels / intermediate_size)), so two names never denote one network: `f82` of
  SmolLM2's 1536 channels is 1280 channels, written `f83`.
- Attention: `h2` keeps every KV head (so the KV cache layout and GQA stay valid) and the first 2 query
  heads of each KV group; a subnet has 2 x num_kv_heads attention heads. Head dim is unchanged.
- One width for every kept layer, so a subnet is a standard checkpoint every runtime loads.

`d24-w75` is the coupled shorthand of the first plans: FFN f75 and round_half_up(heads_per_group x 0.75)
heads per group, i.e. `d24-f75-h2` for SmolLM2. `full` is the base model.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from edgekit.errors import UsageError

# The narrowest FFN a plan offers, in percent of the channels (see docs/elastic.md for the measurement)
DEFAULT_FFN_FLOOR = 25

SHAPE_RE = re.compile(r"^d(\d+)-f(\d+)-h(\d+)$")
COUPLED_RE = re.compile(r"^d(\d+)-w(\d+)$")
DEPTH_RE = re.compile(r"^d(\d+)$")
WRITE = (
    "write shapes as d24-f75-h2 (depth, FFN %, query heads per KV group), d24-w75 (coupled), d24 (full width) or full"
)


@dataclass(frozen=True, order=True)
class Shape:
    depth: int
    ffn: int  # percent of the base model's FFN channels (canonical once a Geometry has seen it)
    heads: int  # query heads kept in each KV group

    @property
    def name(self) -> str:
        return f"d{self.depth}-f{self.ffn}-h{self.heads}"

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


def round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


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

    @property
    def ffn_unit(self) -> int:
        return min(self.ffn_multiple, self.ffn)

    @property
    def full(self) -> Shape:
        return Shape(self.num_layers, 100, self.heads_per_group)

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

    # ------------------------------------------------------------------ the two axes

    def ffn_channels(self, percent: float) -> int:
        """FFN channels of `percent`: the nearest multiple of the unit, at least one unit, at most all."""
        unit = self.ffn_unit
        return max(unit, min(self.ffn, int(round(self.ffn * percent / 100 / unit)) * unit))

    def ffn_percent(self, channels: int) -> int:
        """The canonical percentage written in a shape's name for a channel count."""
        return round(100 * channels / self.ffn)

    def ffn_grid(self, floor: int = 1) -> list[int]:
        """Every canonical FFN percentage from `floor` to 100, widest first: one per multiple of the unit."""
        counts = range(self.ffn, self.ffn_unit - 1, -self.ffn_unit)
        return [p for p in (self.ffn_percent(c) for c in counts) if p >= floor] or [100]

    def coupled_heads(self, width: int) -> int:
        """Query heads per group of the coupled width `w` (the first plans' rule): at least one."""
        return max(1, min(self.heads_per_group, round_half_up(self.heads_per_group * width / 100)))

    def canonical(self, shape: Shape) -> Shape:
        """The same network, written as its canonical name."""
        return Shape(shape.depth, self.ffn_percent(self.ffn_channels(shape.ffn)), shape.heads)

    def coupled(self, depth: int, width: int) -> Shape:
        """`d{depth}-w{width}`: FFN and heads cut by the same percentage."""
        return Shape(depth, self.ffn_percent(self.ffn_channels(width)), self.coupled_heads(width))

    def dims(self, shape: Shape) -> LayerDims:
        return LayerDims(self.ffn_channels(shape.ffn), shape.heads, self.num_kv_heads, self.head_dim)

    def problem(self, shape: Shape, ffn_floor: int = 1) -> str | None:
        """Why `shape` is no valid cut of this model (None when it is), naming the nearest valid one."""
        hpg = self.heads_per_group
        if not 1 <= shape.heads <= hpg:
            near = replace_heads(shape, min(max(shape.heads, 1), hpg))
            return (f"h{shape.heads} keeps {shape.heads} query heads per KV group, and a group has 1 to {hpg} "
                    f"(every KV head stays, so grouped-query attention stays valid); nearest: {near}")  # fmt: skip
        if not 1 <= shape.ffn <= 100:
            return f"f{shape.ffn} is not a percentage of the FFN channels between 1 and 100"
        floor = self.ffn_grid(ffn_floor)[-1]
        if self.ffn_percent(self.ffn_channels(shape.ffn)) < floor:
            near = Shape(shape.depth, floor, shape.heads)
            return f"f{shape.ffn} is below the plan's FFN floor f{floor}; nearest: {near}"
        return None

    # ------------------------------------------------------------------ sizes

    def layer_params(self, shape: Shape) -> int:
        d = self.dims(shape)
        attn = self.hidden * self.head_dim * (2 * d.num_heads + 2 * d.num_kv_heads)
        return attn + 3 * self.hidden * d.ffn + 2 * self.hidden

    def non_embedding_params(self, shape: Shape) -> int:
        return shape.depth * self.layer_params(shape) + self.hidden

    def width_for_fraction(self, fraction: float) -> int:
        """The coupled width whose full-depth non-embedding parameters are closest to `fraction` of the base."""
        full = self.non_embedding_params(self.full)
        return min(
            range(1, 101),
            key=lambda w: abs(self.non_embedding_params(self.coupled(self.num_layers, w)) / full - fraction),
        )


def replace_heads(shape: Shape, heads: int) -> Shape:
    return Shape(shape.depth, shape.ffn, heads)


def parse_shape(text: str, geometry: Geometry | None = None) -> Shape:
    """A shape from its name; with a geometry, canonical, and the coupled `dN-wW`, the full-width `dN` and `full`
    forms too."""
    text = text.strip().lower()
    if text == "full":
        if geometry is None:
            raise UsageError("'full' needs the base model's geometry")
        return geometry.full
    if match := SHAPE_RE.match(text):
        shape = Shape(int(match.group(1)), _percent(text, "f", match.group(2)), int(match.group(3)))
        return geometry.canonical(shape) if geometry is not None else shape
    if match := COUPLED_RE.match(text):
        if geometry is None:
            raise UsageError(f"the coupled shape '{text}' needs the base model's geometry")
        return geometry.coupled(int(match.group(1)), _percent(text, "w", match.group(2)))
    if match := DEPTH_RE.match(text):
        if geometry is None:
            raise UsageError(f"the depth-only shape '{text}' needs the base model's geometry")
        return Shape(int(match.group(1)), 100, geometry.heads_per_group)
    raise UsageError(f"cannot parse shape '{text}': {WRITE}")


def _percent(text: str, axis: str, digits: str) -> int:
    value = int(digits)
    if not 1 <= value <= 100:
        raise UsageError(f"shape '{text}': {axis}{value} is not a percentage between 1 and 100")
    return value


def parse_grid(text: str, geometry: Geometry | None = None) -> list[Shape]:
    """Comma-separated shapes, or a product: 'd30,24 x f100,75 x h3,2', or the coupled 'd30,24 x w100,75'."""
    text = text.strip().lower()
    if " x " not in text:
        return [parse_shape(part, geometry) for part in text.split(",") if part.strip()]
    axes: dict[str, list[int]] = {}
    for part in (p.strip() for p in text.split(" x ")):
        key, values = part[:1], part[1:]
        if key not in "dfhw" or key in axes or not values:
            raise UsageError(f"cannot read the grid '{text}': write e.g. 'd30,24 x f100,75 x h3,2'")
        try:
            axes[key] = [int(v) for v in values.split(",")]
        except ValueError:
            raise UsageError(f"cannot read the grid '{text}': {part} is not a list of numbers") from None
    if "d" not in axes or ("w" in axes) == ("f" in axes or "h" in axes):
        raise UsageError(f"cannot read the grid '{text}': give depths and either w or f and h")
    if "w" in axes:
        if geometry is None:
            raise UsageError(f"the coupled grid '{text}' needs the base model's geometry")
        return [geometry.coupled(d, w) for d in axes["d"] for w in axes["w"]]
    full_heads = geometry.heads_per_group if geometry is not None else None
    heads = axes.get("h") or ([full_heads] if full_heads else None)
    if heads is None:
        raise UsageError(f"the grid '{text}' needs h (query heads per KV group)")
    shapes = [Shape(d, f, h) for d in axes["d"] for f in axes.get("f", [100]) for h in heads]
    return [geometry.canonical(s) for s in shapes] if geometry is not None else shapes
