"""Target descriptors: load the YAML files shipped in targets/, resolve names and aliases, match a host."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from edgekit.data import shipped
from edgekit.errors import UsageError
from edgekit.hardware.host import HostInfo

# "host" is not a file: it stands for whatever `doctor` finds this machine to be.
HOST = "host"


@dataclass
class Target:
    name: str
    title: str
    kind: str  # jetson | gpu | cpu
    aliases: list[str] = field(default_factory=list)
    match: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    compute: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, Any] = field(default_factory=dict)
    software: dict[str, Any] = field(default_factory=dict)
    runtimes: list[dict[str, Any]] = field(default_factory=list)
    power_modes: list[dict[str, Any]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def matches(self, host: HostInfo) -> bool:
        if self.kind != host.kind:
            return False
        rule = self.match
        if "board" in rule and not (host.jetson and re.search(rule["board"], host.jetson.board, re.I)):
            return False
        if "gpu_name" in rule and not any(re.search(rule["gpu_name"], g.name, re.I) for g in host.gpus):
            return False
        if "memory_gb" in rule:
            low, high = rule["memory_gb"]
            if not low <= host.memory_total_gb <= high:
                return False
        return True


def load_targets() -> list[Target]:
    known = set(Target.__dataclass_fields__)
    targets = []
    for entry in sorted(shipped("targets").iterdir(), key=lambda p: p.name):
        if not entry.name.endswith(".yaml"):
            continue
        data = yaml.safe_load(entry.read_text())
        unknown = set(data) - known
        if unknown:
            raise UsageError(f"target file {entry.name} has unknown keys: {', '.join(sorted(unknown))}")
        data["aliases"] = [str(a) for a in data.get("aliases", [])]  # YAML reads `4090` as a number
        targets.append(Target(**data))
    return targets


def get_target(name: str) -> Target:
    wanted = name.strip().lower()
    for target in load_targets():
        if wanted == target.name or wanted in target.aliases:
            return target
    raise UsageError(f"unknown target '{name}'; known: {describe_names()}")


def describe_names() -> str:
    parts = [HOST + " (this machine)"]
    for target in load_targets():
        parts.append(target.name + (f" (alias {', '.join(target.aliases)})" if target.aliases else ""))
    return ", ".join(parts)


def match_host(host: HostInfo) -> Target | None:
    """The most specific descriptor this host fits: a named board or GPU before the generic CPU one."""
    candidates = [t for t in load_targets() if t.matches(host)]
    candidates.sort(key=lambda t: len(t.match), reverse=True)
    return candidates[0] if candidates else None


def catalog() -> list[dict[str, Any]]:
    """Every target with its specs, runtimes and the LUTs there are for it, then every measured host."""
    from edgekit.deployment.lut import all_luts

    luts = [lut for _, lut, _ in all_luts()]

    def have(name: str) -> list[str]:
        return [
            f"{lut.runtime}-{lut.precision} {lut.model['name']} ({lut.status})" for lut in luts if lut.target == name
        ]

    rows = []
    for t in load_targets():
        rows.append({
            "name": t.name, "aliases": t.aliases, "title": t.title, "kind": t.kind,
            "bandwidth_gbs": t.memory.get("bandwidth_gbs"), "memory_gb": t.memory.get("size_gb"),
            "runtimes": [f"{r['runtime']} {r.get('precision', '')}".strip() for r in t.runtimes], "luts": have(t.name),
        })  # fmt: skip
    for host in sorted({lut.target for lut in luts if lut.target.startswith("host-")}):
        machine = next(lut.provenance.get("machine") or {} for lut in luts if lut.target == host)
        rows.append({"name": host, "aliases": [], "title": f"measured machine: {machine.get('cpu', '?')}",
                     "kind": machine.get("kind", "?"), "bandwidth_gbs": None, "memory_gb": machine.get("memory_gb"),
                     "runtimes": [], "luts": have(host)})  # fmt: skip
    return rows
