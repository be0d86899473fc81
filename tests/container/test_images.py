"""edgekit.container.images: the base image for a board's L4T release, which boards an image runs on, image names."""

from __future__ import annotations

import pytest

from edgekit.container.images import base_image_for, l4t_compatible, normalize_l4t
from edgekit.errors import UsageError


def test_base_images_follow_the_l4t_release() -> None:
    ort = base_image_for("36.4.3", "ort")
    assert (
        ort.image == "nvcr.io/nvidia/l4t-jetpack:r36.4.0" and ort.pip_index == "https://pypi.jetson-ai-lab.io/jp6/cu126"
    )
    assert base_image_for("36.4.0", "mlc").image == "dustynv/mlc:0.20.0-r36.4.0"
    assert base_image_for("36.3.0", "mlc").image == "dustynv/mlc:0.1.2-r36.3.0"
    with pytest.raises(UsageError, match="CUDA 12.6"):
        base_image_for("36.3.0", "ort")
    with pytest.raises(UsageError, match="Python 3.8"):
        base_image_for("35.4.1", "ort")
    with pytest.raises(UsageError, match="JetPack 7"):
        base_image_for("38.2.0", "mlc")
    with pytest.raises(UsageError, match="ort or mlc"):
        base_image_for("36.4.3", "torch")


def test_l4t_compatibility_and_parsing() -> None:
    assert l4t_compatible("36.4.3", "36.4.0") and l4t_compatible("36.3.0", "36.2.0")
    assert not l4t_compatible("36.4.0", "36.3.0") and not l4t_compatible("36.4.3", "35.4.1")
    assert l4t_compatible("35.4.1", "35.6.0")
    assert normalize_l4t("r36.4.3") == "36.4.3" and normalize_l4t("R36.4") == "36.4"
    with pytest.raises(UsageError, match="--l4t takes"):
        normalize_l4t("jetpack6")
