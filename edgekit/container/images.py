"""Which image a Jetson deployment is built on and called: the base image for a board's L4T release and the
deployment's runtime, whether an image runs on a board, and Docker's image-name grammar.

An image only runs on a board of the same L4T major release (and, on JetPack 6, on the same side of 36.4),
so the release comes from the target descriptor or --l4t and never from a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgekit.deployment.targets import Target
from edgekit.errors import UsageError

RUNTIMES = ("ort", "mlc")

# Where CUDA builds of Python packages for Jetson live: PyPI's aarch64 wheels of torch, onnxruntime and
# onnxruntime-genai are CPU-only (microsoft/onnxruntime-genai#2283, microsoft/onnxruntime#20503). The
# jetson-containers project serves them per JetPack and CUDA release: pip_cache() in
# packages/cuda/cuda/config.py of dusty-nv/jetson-containers builds `https://pypi.{host}/jp6/cu126`,
# with host jetson-ai-lab.io since b20dbc9c (Aug 2025; images built before then still point at the old
# .dev host, which is why Dockerfile.jetson names the index itself). Its wheels come and go
# (dusty-nv/jetson-containers#1462), so the versions Dockerfile.jetson pins are the ones that project
# builds at dd206bf: onnxruntime 1.25.1 and onnxruntime_genai 0.13.1 for cu126.
JETSON_PIP_INDEX_JP6_CU126 = "https://pypi.jetson-ai-lab.io/jp6/cu126"
DEFAULT_ORT_GENAI = "0.13.1"


@dataclass(frozen=True)
class BaseImage:
    image: str
    runtime: str
    l4t_range: str  # the board releases it runs on, for messages
    pip_index: str | None  # where CUDA wheels for this JetPack come from (ort installs from it)
    source: str  # where the name and tag were read
    runtime_version: str | None = None  # the MLC-LLM inside; its compiled model libraries must match it


# Tags from the image tables of dusty-nv/jetson-containers at dd206bf (packages/llm/mlc/README.md) and
# NVIDIA's NGC catalogue (l4t-jetpack). jetson-containers' l4t_version_compatible() runs 36.4+
# containers only on 36.4+ boards and 36.0-36.3 containers only on 36.0-36.3 boards, hence two rows.
# ORT uses NVIDIA's own JetPack image (CUDA 12.6, cuDNN 9.3, TensorRT 10.3 on Ubuntu 22.04) plus the CUDA
# wheels above: jetson-containers publishes no onnxruntime_genai image (its README lists none), and its
# onnxruntime images carry an older ORT than the genai wheels on the index are built against.
BASE_IMAGES: dict[tuple[str, str], BaseImage] = {
    ("ort", "36.4"): BaseImage(
        "nvcr.io/nvidia/l4t-jetpack:r36.4.0", "ort", "L4T 36.4.x (JetPack 6.1/6.2)", JETSON_PIP_INDEX_JP6_CU126,
        "NGC nvidia/l4t-jetpack; CUDA wheels: jetson-containers pip_cache (jp6/cu126)",
    ),
    ("mlc", "36.4"): BaseImage(
        "dustynv/mlc:0.20.0-r36.4.0", "mlc", "L4T 36.4.x (JetPack 6.1/6.2)", None,
        "dusty-nv/jetson-containers packages/llm/mlc/README.md (newest r36.4 tag, 2025-05-02)", "0.20.0",
    ),
    ("mlc", "36.0"): BaseImage(
        "dustynv/mlc:0.1.2-r36.3.0", "mlc", "L4T 36.0-36.3 (JetPack 6.0)", None,
        "dusty-nv/jetson-containers packages/llm/mlc/README.md (newest r36.3 tag, 2024-09-25)", "0.1.2",
    ),
}  # fmt: skip


# ------------------------------------------------------------------ L4T releases and base images


def normalize_l4t(text: str) -> str:
    """'r36.4.3', 'R36.4', '36.4.3' -> '36.4.3' / '36.4'; anything else is a usage error."""
    match = re.fullmatch(r"[rR]?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if not match:
        raise UsageError(f"--l4t takes an L4T release such as 36.4.3 (see /etc/nv_tegra_release), not '{text}'")
    return ".".join(g for g in match.groups() if g is not None)


def _major_minor(l4t: str) -> tuple[int, int]:
    parts = normalize_l4t(l4t).split(".")
    return int(parts[0]), int(parts[1])


def l4t_compatible(image_l4t: str, board_l4t: str) -> bool:
    """Whether a board runs an image built for another L4T release: the rule of jetson-containers'
    l4t_version_compatible() (jetson_containers/l4t_version.py): the same major release, and on
    JetPack 6 both before 36.4 or both from 36.4 on (36.4 moved to CUDA 12.6 and a new driver)."""
    (im, imin), (bm, bmin) = _major_minor(image_l4t), _major_minor(board_l4t)
    if im != bm:
        return False
    if im == 36:
        return (imin >= 4) == (bmin >= 4)
    return True


def base_image_for(l4t: str, runtime: str) -> BaseImage:
    """The image to build on for a board's L4T release and a runtime; a usage error naming the way out
    where there is none (JetPack 5's images carry Python 3.8, and edgekit needs 3.10)."""
    if runtime not in RUNTIMES:
        raise UsageError(f"container images run ort or mlc deployments, not '{runtime}'")
    major, minor = _major_minor(l4t)
    if major != 36:
        why = (
            "JetPack 5 images carry Python 3.8 and edgekit needs 3.10"
            if major < 36
            else "JetPack 7 images are not mapped yet"
        )
        raise UsageError(
            f"no base image for L4T {l4t} ({why}): pass --base-image IMAGE built for that release, "
            "or flash the board with JetPack 6 (L4T 36.x)"
        )
    family = "36.4" if minor >= 4 else "36.0"
    base = BASE_IMAGES.get((runtime, family))
    if base is None:
        raise UsageError(
            f"no {runtime} base image for L4T {l4t}: jetson-containers builds onnxruntime-genai with CUDA "
            "only for CUDA 12.6+ (JetPack 6.1+, L4T 36.4): upgrade the board, use --runtime mlc, or pass --base-image"
        )
    return base


def resolve_l4t(target: Target, l4t: str | None) -> str:
    if l4t:
        return normalize_l4t(l4t)
    known = (target.software or {}).get("l4t")
    if not known:
        raise UsageError(
            f"the L4T release of {target.name} is unknown (its descriptor has none): pass --l4t, e.g. --l4t 36.4.3 "
            "(the board's `cat /etc/nv_tegra_release` shows it: R36 REVISION 4.3 is 36.4.3)"
        )
    return normalize_l4t(str(known))


# ------------------------------------------------------------------ image names

_REPO_PART = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def default_image(model: str, shape: str, runtime: str, l4t: str) -> str:
    name = re.sub(r"[^a-z0-9.-]+", "-", f"{model}-{shape}".lower()).strip("-.")
    return f"edgekit/{name}:{runtime}-r{l4t}"


def check_image_name(image: str) -> str:
    """Docker's reference grammar, checked here so a bad --tag fails before a long build, not after."""
    name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
    path = name.split("/")
    host = path[0] if len(path) > 1 and ("." in path[0] or ":" in path[0] or path[0] == "localhost") else None
    parts = path[1:] if host else path
    if not parts or not all(_REPO_PART.fullmatch(p) for p in parts) or (tag and not _TAG.fullmatch(tag)):
        raise UsageError(
            f"'{image}' is not a docker image name: lowercase letters, digits and . _ - separated by /, "
            "then an optional :tag (e.g. edgekit/smollm2-d20-w61:ort-r36.4.3)"
        )
    return image
