"""Shapes and model geometry (edgekit.shapes): the width rule, parameter counts, parsing shapes and grids."""

from __future__ import annotations

import pytest

from edgekit.errors import UsageError
from edgekit.shapes import Geometry, Shape, parse_grid, parse_shape


def test_width_rule_and_shape_parsing(tiny):
    config, _, _ = tiny
    g = Geometry.from_config(config)  # ffn 128, 4 heads / 2 KV heads
    assert g.dims(100).ffn == 128 and g.dims(100).num_heads == 4
    assert g.dims(50).ffn == 64 and g.dims(50).heads_per_group == 1 and g.dims(50).num_heads == 2
    assert g.dims(10).ffn == 64  # never below one multiple
    smol = Geometry(30, 576, 1536, 9, 3, 64, 49152)
    assert smol.dims(75).ffn == 1152 and smol.dims(75).num_heads == 6
    # 134,515,008 parameters minus the 49152 x 576 embedding
    assert smol.non_embedding_params(Shape(30, 100)) == 134_515_008 - 49152 * 576
    assert parse_shape("d20-w75") == Shape(20, 75) and parse_shape("full", 30) == Shape(30, 100)
    assert parse_grid("d30,24 x w100,75") == [Shape(30, 100), Shape(30, 75), Shape(24, 100), Shape(24, 75)]
    with pytest.raises(UsageError, match="d20-w75"):
        parse_shape("20x75")
