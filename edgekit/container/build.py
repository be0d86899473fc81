"""Building a Jetson image of a deployment: the build context (Dockerfile.jetson, a verified copy of the
deployment, the edgekit wheel, a manifest of hashes), and the exact `docker buildx` command line with the
checks that must pass before it runs. Which base image and tag: edgekit.container.images. Moving an image
onto a board over SSH: edgekit.container.flash."""

from __future__ import annotations

import platform
import re
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit import __version__, shell
from edgekit.artifacts import (
    atomic_dir,
    hash_tree,
    read_format_json,
    sha256_file,
    utc_now,
    verify_files,
    write_manifest,
)
from edgekit.container.images import (
    DEFAULT_ORT_GENAI,
    JETSON_PIP_INDEX_JP6_CU126,
    BaseImage,
    base_image_for,
    check_image_name,
    default_image,
    resolve_l4t,
)
from edgekit.deployment.targets import Target, get_target
from edgekit.errors import ExternalToolError, IntegrityError, MissingDependencyError, UsageError
from edgekit.formats import tag
from edgekit.hardware.host import jetpack_for_l4t
from edgekit.shell import Command

if TYPE_CHECKING:
    from edgekit.deployment.manifest import DeploymentManifest

FORMAT = tag("edgekit-container-context")
CONTEXT_MANIFEST = "context.json"
DOCKERFILE = "Dockerfile.jetson"
PLATFORM = "linux/arm64"
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")  # a module constant so tests can point it elsewhere
BINFMT_FIX = "docker run --privileged --rm tonistiigi/binfmt --install arm64"


@dataclass
class BuildPlan:
    image: str
    context: Path
    target: str
    l4t: str
    jetpack: str | None
    runtime: str
    base: BaseImage
    model: str
    shape: str
    precision: str
    deployment: Path
    deployment_sha256: str  # of its manifest.json, which holds every other file's hash
    package: str  # the wheel's file name under dist/
    build_args: dict[str, str]
    notes: list[str] = field(default_factory=list)
    prepared_with: list[dict[str, str]] = field(default_factory=list)  # what ran to write the context

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["context"], data["deployment"] = str(self.context), str(self.deployment)
        return data


# ------------------------------------------------------------------ the build context


def source_root() -> Path | None:
    """The source checkout edgekit runs from (an editable install), else None."""
    import edgekit

    root = Path(edgekit.__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and re.search(r'^name\s*=\s*"edgekit"', pyproject.read_text(), re.M):
        return root
    return None


def dockerfile_path() -> Path:
    """Dockerfile.jetson, shipped with the package."""
    from edgekit.data import shipped

    path = shipped(DOCKERFILE)
    if not path.is_file():
        raise IntegrityError(f"{DOCKERFILE} is missing from this edgekit install: reinstall edgekit")
    return path


# what `pip wheel` reads from a checkout: the project file, the readme it names, the package
SOURCE_PARTS = ("pyproject.toml", "README.md", "edgekit")


def wheel_command(src: Path, out: Path) -> Command:
    # --no-build-isolation: the setuptools already installed builds it, offline, in a second or two
    argv = (sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out))
    return Command((*argv, str(src)), "build the edgekit wheel the image installs")


def build_wheel(out: Path) -> tuple[Path, Command]:
    """`pip wheel --no-deps .` on a copy of the checkout (so the checkout gains no build/ or egg-info)."""
    root = source_root()
    if root is None:
        raise MissingDependencyError(
            "this edgekit is not a source checkout, so it cannot build its own wheel: pass --wheel PATH "
            "(a wheel built with `pip wheel --no-deps .` in a checkout)"
        )
    # the source copy sits beside `out` (inside the context being built), so a SIGKILL leaves it in the folder
    # the next build sweeps, not in /tmp
    with tempfile.TemporaryDirectory(prefix="wheel-src-", dir=out.parent) as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        skip = shutil.ignore_patterns("__pycache__", "*.pyc", ".partial-*")
        for part in SOURCE_PARTS:
            if (root / part).is_dir():
                shutil.copytree(root / part, src / part, ignore=skip)
            else:
                shutil.copy2(root / part, src / part)
        cmd = wheel_command(src, out)
        done = shell.capture(cmd, timeout=None)
        if not done.ok:
            raise ExternalToolError(f"building the edgekit wheel failed (`pip wheel`): {done.last_error_line()}")
    wheels = sorted(out.glob("edgekit-*.whl"))
    if len(wheels) != 1:
        raise IntegrityError(f"pip wheel left {len(wheels)} edgekit wheels in {out}, expected one")
    shown = wheel_command(root, out)  # what ran, with the checkout in place of its throwaway copy
    return wheels[0], Command(shown.argv, shown.why + " (run on a copy of the checkout)")


def copy_deployment(src: Path, dest: Path) -> DeploymentManifest:
    """Exactly the files the manifest names, plus the manifest, verified again after the copy."""
    from edgekit.deployment.manifest import MANIFEST, load_deployment

    manifest = load_deployment(src)
    dest.mkdir()
    for rel in manifest.files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, dest / rel)
    shutil.copy2(src / MANIFEST, dest / MANIFEST)
    verify_files(dest, manifest.files, f"the copy of deployment {src}")
    return manifest


def plan_notes(manifest: DeploymentManifest, target: Target, base: BaseImage, args: dict[str, str]) -> list[str]:
    """What the user should know before a long build: mismatches that would only show on the board."""
    notes = []
    if manifest.target.name != target.name:
        notes.append(f"the deployment was made for {manifest.target.name}, the image is for {target.name}")
    rt = manifest.runtime
    if rt.device != "cuda":
        notes.append(f"the deployment runs on {rt.device}: on the board it will not use the GPU")
    built_with = rt.versions.get("onnxruntime-genai")
    if rt.name == "ort" and built_with and built_with != args.get("ONNXRUNTIME_GENAI_VERSION"):
        notes.append(
            f"the model was compiled with onnxruntime-genai {built_with}, the image installs "
            f"{args.get('ONNXRUNTIME_GENAI_VERSION')}; a newer builder's genai_config.json may not load in an older "
            "runtime: redeploy with that version, or --build-arg ONNXRUNTIME_GENAI_VERSION=... if the index has it"
        )
    mlc_with = rt.versions.get("mlc_llm")
    if rt.name == "mlc" and base.runtime_version and mlc_with and not mlc_with.startswith(base.runtime_version):
        notes.append(
            f"the model library was compiled with mlc_llm {mlc_with}, the image runs MLC {base.runtime_version}: "
            "a library from another MLC/TVM version may not load; compile with the image's version"
        )
    if base.pip_index is None and rt.name == "ort":
        notes.append("the base image was given with --base-image: set --build-arg JETSON_PIP_INDEX for its CUDA")
    return notes


def image_args(
    manifest: DeploymentManifest,
    target: Target,
    release: str,
    base: BaseImage,
    manifest_sha256: str,
    serve: bool = False,
) -> dict[str, str]:
    """The Dockerfile's build arguments for this deployment, board and base image (before --build-arg)."""
    runtime = manifest.runtime.name
    args = {
        "BASE_IMAGE": base.image,
        "RUNTIME": runtime,
        "EDGEKIT_TARGET": target.name,
        "EDGEKIT_L4T": release,
        "EDGEKIT_JETPACK": jetpack_for_l4t(release) or "unknown",
        "EDGEKIT_MODEL": manifest.model["name"],
        "EDGEKIT_SHAPE": manifest.shape.name,
        "EDGEKIT_PRECISION": manifest.runtime.precision,
        "EDGEKIT_DEPLOYMENT_SHA256": manifest_sha256,
        "EDGEKIT_SERVE": "1" if serve else "0",
    }
    if runtime == "ort":
        args["JETSON_PIP_INDEX"] = base.pip_index or JETSON_PIP_INDEX_JP6_CU126
        args["ONNXRUNTIME_GENAI_VERSION"] = DEFAULT_ORT_GENAI
    return args


def check_wheel(path: Path) -> None:
    """A --wheel must be an edgekit wheel (a zip whose dist-info names edgekit), or the image build would fail
    minutes in, on the board's architecture, at `pip install`."""
    import zipfile

    if not path.is_file():
        raise UsageError(f"--wheel {path}: no such file")
    if path.suffix != ".whl" or not zipfile.is_zipfile(path):
        raise UsageError(f"--wheel {path} is not a wheel (a .whl zip archive)")
    with zipfile.ZipFile(path) as zf:
        meta = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        name = ""
        if meta:
            head = zf.read(meta[0]).decode("utf-8", "replace")
            name = next((line.split(":", 1)[1].strip() for line in head.splitlines() if line.startswith("Name:")), "")
    if name.lower() != "edgekit":
        raise UsageError(f"--wheel {path} is not an edgekit wheel (its metadata names {name or 'no package'})")


def prepare_context(
    deployment_dir: Path,
    target: str | Target,
    out_dir: Path | None,
    *,
    l4t: str | None = None,
    tag: str | None = None,
    wheel: Path | None = None,
    base_image: str | None = None,
    build_args: dict[str, str] | None = None,
    force: bool = False,
    serve: bool = False,
) -> BuildPlan:
    """Write the build context (Dockerfile, deployment copy, wheel, context.json) into a temporary folder
    renamed into place, and return the plan whose build_commands() build it. The image runs the runtime the
    deployment was compiled for."""
    from edgekit.deployment.manifest import MANIFEST, load_deployment

    tgt = target if isinstance(target, Target) else get_target(target)
    if tgt.kind != "jetson":
        raise UsageError(f"container images are for Jetson boards; {tgt.name} is a {tgt.kind} target")
    release = resolve_l4t(tgt, l4t)
    deployment_dir = Path(deployment_dir)
    manifest = load_deployment(deployment_dir)
    runtime, model, shape = manifest.runtime.name, manifest.model["name"], manifest.shape.name
    base = base_image_for(release, runtime) if not base_image else BaseImage(base_image, runtime, "given", None,
                                                                             "--base-image")  # fmt: skip
    image = check_image_name(tag or default_image(model, shape, runtime + ("-serve" if serve else ""), release))
    if wheel is not None:
        check_wheel(Path(wheel))
    from edgekit.paths import home

    out = Path(out_dir) if out_dir else home() / "containers" / re.sub(r"[^A-Za-z0-9._-]+", "_", image)
    if out_dir and out.exists() and not force:
        raise UsageError(f"{out} exists; pass --force to replace it")
    dockerfile = dockerfile_path()
    args = image_args(manifest, tgt, release, base, sha256_file(deployment_dir / MANIFEST), serve)
    unknown = set(build_args or {}) - set(dockerfile_args(dockerfile.read_text()))
    if unknown:
        raise UsageError(f"--build-arg {', '.join(sorted(unknown))}: {DOCKERFILE} declares no such ARG")
    args.update(build_args or {})
    notes = plan_notes(manifest, tgt, base, args)
    # our own default folder is rebuilt in place; a folder the user named needs --force
    with atomic_dir(out, replace=force or out_dir is None) as tmp:
        shutil.copy2(dockerfile, tmp / "Dockerfile")
        copy_deployment(deployment_dir, tmp / "deployment")
        (tmp / "dist").mkdir()
        prepared = []
        if wheel is not None:
            package = Path(shutil.copy2(wheel, tmp / "dist" / Path(wheel).name))
        else:
            package, cmd = build_wheel(tmp / "dist")
            prepared.append({"run": cmd.text().replace(str(tmp), str(out)), "why": cmd.why})
        args["EDGEKIT_WHEEL"] = package.name
        plan = BuildPlan(
            image, out, tgt.name, release, jetpack_for_l4t(release), runtime, base, model, shape,
            manifest.runtime.precision, deployment_dir.resolve(), args["EDGEKIT_DEPLOYMENT_SHA256"], package.name,
            args, notes, prepared,
        )  # fmt: skip
        write_manifest(tmp / CONTEXT_MANIFEST, context_manifest(plan, tmp))
    return plan


def context_manifest(plan: BuildPlan, root: Path) -> dict[str, Any]:
    data = plan.to_dict()
    data.pop("context")  # the folder moves into place after this is written
    return {
        "format": FORMAT,
        "created": utc_now(),
        "edgekit_version": __version__,
        "platform": PLATFORM,
        "plan": data,
        "files": hash_tree(root, skip={CONTEXT_MANIFEST}),
    }


def load_context(path: Path) -> dict[str, Any]:
    """A context's manifest after checking every file in it against its hash (what a build sends)."""
    manifest = read_format_json(Path(path) / CONTEXT_MANIFEST, "edgekit-container-context", f"build context {path}")
    verify_files(Path(path), manifest["files"], f"build context {path}")
    return manifest


def dockerfile_args(text: str) -> list[str]:
    """The ARG names a Dockerfile declares (before or after FROM), in order."""
    names = []
    for line in text.replace("\\\n", " ").splitlines():
        if line.strip().upper().startswith("ARG "):
            for token in line.strip()[4:].split():
                name = token.split("=", 1)[0]
                if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and name not in names:
                    names.append(name)
    return names


# ------------------------------------------------------------------ commands and checks


def build_commands(plan: BuildPlan) -> list[Command]:
    argv = ["docker", "buildx", "build", "--platform", PLATFORM]
    for key, value in plan.build_args.items():
        argv += ["--build-arg", f"{key}={value}"]
    argv += ["-t", plan.image, "--load", str(plan.context)]
    return [Command(tuple(argv), f"build {plan.image} for {PLATFORM} and load it into the local docker")]


def needs_emulation(machine: str | None = None) -> bool:
    """Arm64 build steps need QEMU everywhere but on an arm64 host (a Jetson, a Graviton, an M-series VM)."""
    return (machine or platform.machine()).lower() not in ("aarch64", "arm64")


def check_commands(machine: str | None = None) -> list[Command]:
    """The checks before a build, as the commands they run (a --dry-run lists them)."""
    cmds = [Command(("docker", "buildx", "version"), "docker and its buildx plugin are installed")]
    if needs_emulation(machine):
        cmds.append(
            Command(("docker", "buildx", "inspect"), f"the builder runs {PLATFORM} (QEMU), unless "
                    f"{BINFMT_DIR / 'qemu-aarch64'} already says so")
        )  # fmt: skip
    return cmds


def binfmt_arm64(binfmt_dir: Path | None = None) -> str | None:
    """'enabled' / 'disabled' for the kernel's qemu-aarch64 binfmt handler, None when none is registered."""
    entry = (binfmt_dir or BINFMT_DIR) / "qemu-aarch64"
    try:
        text = entry.read_text()
    except OSError:
        return None
    return "enabled" if text.splitlines()[:1] == ["enabled"] else "disabled"


def parse_buildx_platforms(text: str) -> list[str]:
    """Platforms from `docker buildx inspect` ('Platforms: linux/amd64, linux/arm64, ...'); a builder
    with several nodes prints the line once per node."""
    found: list[str] = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == "platforms":
            found += [p.strip().rstrip("*") for p in value.split(",") if p.strip()]
    return found


def preflight_build(machine: str | None = None) -> list[str]:
    """Raise, with what to install, unless docker, buildx and (off arm64) QEMU for arm64 are ready.
    Returns notes on what was found."""
    if shutil.which("docker") is None:
        raise MissingDependencyError(
            "docker is not installed (not on PATH): install Docker Engine with the buildx plugin "
            "(Debian/Ubuntu: apt-get install docker.io docker-buildx; or Docker's docker-ce and docker-buildx-plugin)"
        )
    buildx = shell.capture(Command(("docker", "buildx", "version"), "buildx present"))
    if not buildx.ok:
        raise MissingDependencyError(
            f"docker buildx is missing ({buildx.first_error_line()}): install the buildx plugin "
            "(Debian/Ubuntu: apt-get install docker-buildx; Docker's repository: docker-buildx-plugin)"
        )
    notes = [f"buildx: {buildx.out.strip().splitlines()[0] if buildx.out.strip() else 'present'}"]
    if not needs_emulation(machine):
        return notes + ["arm64 host: no emulation needed"]
    state = binfmt_arm64()
    if state == "enabled":
        return notes + [f"QEMU for arm64: registered ({BINFMT_DIR / 'qemu-aarch64'})"]
    inspect = shell.capture(Command(("docker", "buildx", "inspect"), "builder platforms"))
    if inspect.ok and PLATFORM in parse_buildx_platforms(inspect.out):
        return notes + ["QEMU for arm64: the builder lists linux/arm64"]
    seen = "registered but disabled" if state == "disabled" else "not registered"
    raise MissingDependencyError(
        f"this {platform.machine()} machine cannot run arm64 build steps: QEMU for arm64 is {seen} with "
        f"binfmt_misc. Register it with `{BINFMT_FIX}` (or apt-get install qemu-user-static binfmt-support), "
        "or build on the Jetson itself"
    )


def run_build(plan: BuildPlan) -> None:
    """Build the image (output on the terminal); a failed build is one line naming the context."""
    load_context(plan.context)  # what is sent is what was verified
    for cmd in build_commands(plan):
        result = shell.stream(cmd)
        if not result.ok:
            raise ExternalToolError(
                f"docker buildx build failed ({result.last_error_line()}); its output is above; the context "
                f"is kept at {plan.context}"
            )
