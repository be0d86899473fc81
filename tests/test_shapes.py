"""Shapes and model geometry (edgekit.shapes): FFN and heads apart, the rounding, the coupled shorthand,
parameter counts, parsing shapes and grids."""

from __future__ import annotations

import pytest

from edgekit.errors import UsageError
from edgekit.shapes import Geometry, Shape, parse_grid, parse_shape

SMOL = Geometry(30, 576, 1536, 9, 3, 64, 49152)


def test_ffn_and_heads_are_apart_with_the_stated_rounding(tiny):
    config, _, _ = tiny
    g = Geometry.from_config(config)  # ffn 128, 4 heads / 2 KV heads
    assert g.dims(g.full).ffn == 128 and g.dims(g.full).num_heads == 4
    assert g.dims(Shape(4, 50, 1)).ffn == 64 and g.dims(Shape(4, 50, 1)).num_heads == 2
    assert g.dims(Shape(4, 10, 2)).ffn == 64  # never below one multiple
    # SmolLM2: FFN in multiples of 64 channels, named by the canonical percentage of 1536
    assert SMOL.dims(Shape(30, 75, 3)).ffn == 1152 and SMOL.dims(Shape(30, 75, 3)).num_heads == 9
    assert SMOL.canonical(Shape(24, 82, 2)) == Shape(24, 83, 2)  # 1280 channels is 83.3 %
    assert SMOL.ffn_grid(25) == [100, 96, 92, 88, 83, 79, 75, 71, 67, 62, 58, 54, 50, 46, 42, 38, 33, 29, 25]
    assert len({SMOL.dims(Shape(30, f, 3)).ffn for f in SMOL.ffn_grid(1)}) == len(SMOL.ffn_grid(1)) == 24
    # 134,515,008 parameters minus the 49152 x 576 embedding
    assert SMOL.non_embedding_params(SMOL.full) == 134_515_008 - 49152 * 576
    # fewer heads at the same FFN: fewer parameters, by exactly q and o of the heads dropped
    per_head = 2 * 576 * 64 * 3  # q and o rows/columns of one head in each of the 3 groups
    drop = SMOL.layer_params(Shape(30, 100, 3)) - SMOL.layer_params(Shape(30, 100, 2))
    assert drop == per_head


def test_names_parse_to_canonical_shapes():
    assert Shape(24, 75, 2).name == "d24-f75-h2" and str(Shape(30, 100, 3)) == "d30-f100-h3"
    assert parse_shape("d24-f75-h2") == Shape(24, 75, 2)
    assert parse_shape("D24-F82-H2 ", SMOL) == Shape(24, 83, 2)
    # the coupled shorthand: one percentage for FFN and heads (round half up, at least one head)
    assert parse_shape("d20-w75", SMOL) == Shape(20, 75, 2) and parse_shape("d30-w48", SMOL) == Shape(30, 50, 1)
    assert parse_shape("d30-w10", SMOL) == Shape(30, 8, 1)  # a width is valid; a plan's floor refuses it
    assert parse_shape("full", SMOL) == SMOL.full
    assert parse_grid("d30,24 x f100,75 x h3,2", SMOL) == [
        Shape(30, 100, 3), Shape(30, 100, 2), Shape(30, 75, 3), Shape(30, 75, 2),
        Shape(24, 100, 3), Shape(24, 100, 2), Shape(24, 75, 3), Shape(24, 75, 2),
    ]  # fmt: skip
    assert parse_grid("d30,24 x w100,75", SMOL) == [Shape(30, 100, 3), Shape(30, 75, 2), Shape(24, 100, 3),
                                                    Shape(24, 75, 2)]  # fmt: skip
    assert parse_grid("d30-f50-h1,full", SMOL) == [Shape(30, 50, 1), SMOL.full]
    for bad, message in (("20x75", "d24-f75-h2"), ("d20-w75", "needs the base model's geometry"),
                         ("full", "geometry")):  # fmt: skip
        with pytest.raises(UsageError, match=message):
            parse_shape(bad)
    with pytest.raises(UsageError, match="give depths and either w or f and h"):
        parse_grid("d30 x w100 x h2", SMOL)


def test_problems_name_the_nearest_valid_shape():
    assert SMOL.problem(Shape(30, 50, 2), 25) is None
    assert "h4 keeps 4 query heads per KV group, and a group has 1 to 3" in SMOL.problem(Shape(30, 50, 4), 25)
    assert "nearest: d30-f50-h3" in SMOL.problem(Shape(30, 50, 4), 25)
    assert "nearest: d30-f50-h1" in SMOL.problem(Shape(30, 50, 0), 25)
    assert "below the plan's FFN floor f25; nearest: d30-f25-h2" in SMOL.problem(Shape(30, 17, 2), 25)
    assert "not a percentage" in SMOL.problem(Shape(30, 120, 2), 25)
