"""Helpers shared by the container tests: a deployment folder, the one-line error check, stub docker and ssh.

No docker daemon, registry or Jetson is reachable here. Where a test needs docker or ssh to answer, a
stub program on PATH plays them (it records its argv and stdin, answers from rules the test writes);
the unreachable board is a real `ssh` to a closed port on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from edgekit.artifacts import hash_tree, write_json_atomic
from edgekit.container import images


def make_deployment(folder: Path, runtime: str = "ort", precision: str = "int4") -> Path:
    """A deployment folder in edgekit's format: files hashed into manifest.json as `deploy` writes them
    (the container code reads only the manifest and checks the hashes; what the model files hold does
    not matter to it, and a real deploy needs a profiled LUT first, which is slow on 2 cores)."""
    from tiny import deployment_manifest

    from edgekit.deployment.manifest import MANIFEST

    (folder / "model").mkdir(parents=True)
    (folder / "model" / "genai_config.json").write_text(json.dumps({"model": {"type": "llama", "context_length": 64}}))
    (folder / "model" / "model.onnx").write_bytes(bytes(range(256)) * 16)
    (folder / "README.md").write_text("# tiny-llama d4-w67 for NVIDIA Jetson Orin NX 16GB\n")
    manifest = deployment_manifest(runtime, precision)
    if runtime == "ort":
        manifest.runtime.versions = {"onnxruntime-genai": images.DEFAULT_ORT_GENAI}
    manifest.files = hash_tree(folder)
    write_json_atomic(folder / MANIFEST, manifest.to_dict())
    return folder


def one_line_error(r, code: int, *needles: str) -> None:
    assert r.code == code, (r.code, r.err, r.out)
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.err
    assert "Traceback" not in r.err
    for needle in needles:
        assert needle in r.err, (needle, r.err)


class Stubs:
    """`docker` and/or `ssh` stand-ins on PATH: each call is logged (argv, bytes read from stdin) and
    answered by the first rule whose text occurs in 'prog arg1 arg2 ...'."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch, progs: tuple[str, ...]) -> None:
        self.bin, self.log, self.config = tmp / "stub-bin", tmp / "stub-log.jsonl", tmp / "stub-rules.json"
        self.bin.mkdir()
        self.rules: list[dict] = []
        for prog in progs:
            path = self.bin / prog
            path.write_text(f"#!{sys.executable}\n{STUB_SOURCE}")
            path.chmod(0o755)
        monkeypatch.setenv("STUB_LOG", str(self.log))
        monkeypatch.setenv("STUB_RULES", str(self.config))
        monkeypatch.setenv("PATH", f"{self.bin}{os.pathsep}{os.environ['PATH']}")

    def on(self, match: str, out: str = "", err: str = "", code: int = 0, **extra) -> Stubs:
        self.rules.append({"match": match, "out": out, "err": err, "code": code, **extra})
        self.config.write_text(json.dumps(self.rules))
        return self

    def calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


STUB_SOURCE = r"""
import json, os, sys
prog, args = os.path.basename(sys.argv[0]), sys.argv[1:]
line = " ".join([prog, *args])
entry = {"prog": prog, "argv": args}
rules = json.load(open(os.environ["STUB_RULES"])) if os.path.exists(os.environ["STUB_RULES"]) else []
rule = next((r for r in rules if r["match"] in line), None)
if rule and rule.get("read_stdin"):
    entry["stdin_bytes"] = len(sys.stdin.buffer.read())
with open(os.environ["STUB_LOG"], "a") as fh:
    fh.write(json.dumps(entry) + "\n")
if rule is None:
    sys.stderr.write(f"stub: no rule for {line}\n")
    sys.exit(99)
if rule.get("write_bytes"):
    sys.stdout.buffer.write(b"\0" * rule["write_bytes"])
sys.stdout.write(rule["out"])
sys.stderr.write(rule["err"])
sys.exit(rule["code"])
"""
