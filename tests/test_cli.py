"""The `edgekit` command as a whole: every command's help, one meaning per flag, the exit-code table, and the
README's two commands and generated benchmark page staying true."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _commands() -> dict[str, Any]:
    """Every leaf command, by its full name ('elastic train'). Typer carries its own copy of click, so this
    reads the commands by their shape rather than by click's classes."""
    import typer

    from edgekit.cli import app

    found: dict[str, Any] = {}

    def walk(cmd: Any, prefix: str) -> None:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, f"{prefix} {name}".strip())
        else:
            found[prefix] = cmd

    walk(typer.main.get_command(app), "")
    return found


def test_every_command_has_help(cli):
    commands = _commands()
    assert {"deploy", "profile", "chat", "elastic train", "container build", "models pull"} <= set(commands)
    for name in commands:
        result = cli(*name.split(), "--help")
        assert result.code == 0 and "Usage:" in result.out, name
    done = subprocess.run([sys.executable, "-m", "edgekit", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "deploy" in done.stdout


def test_a_flag_means_one_thing_everywhere():
    helps: dict[str, dict[str, list[str]]] = {}
    for name, cmd in _commands().items():
        for param in cmd.params:
            if param.param_type_name == "option":
                for flag in param.opts:
                    helps.setdefault(flag, {}).setdefault(param.help or "", []).append(name)
    clashes = {flag: texts for flag, texts in helps.items() if len(texts) > 1}
    assert not clashes, clashes
    assert "--max-tokens" not in helps  # a reply's length is --max-new-tokens, a text budget --text-tokens


def test_every_command_that_prints_a_result_has_json():
    # commands that only run something interactive or long-lived print no result object
    without = {"chat", "serve"}  # chat: its --json needs --prompt (chat tests); serve prints no result, it serves
    for name, cmd in _commands().items():
        flags = {f for p in cmd.params if p.param_type_name == "option" for f in p.opts}
        assert "--json" in flags or name in without, name


def test_the_exit_code_table_names_every_error():
    from edgekit import errors

    table = (ROOT / "docs" / "errors.md").read_text()
    kinds = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.EdgekitError)]
    for kind in kinds:
        if kind is errors.EdgekitError:
            continue
        assert re.search(rf"\| {kind.exit_code} \| `{kind.__name__}` \|", table), kind.__name__
    assert len({k.exit_code for k in kinds if k is not errors.EdgekitError}) == len(kinds) - 1  # one code each


def test_library_errors_become_one_line_with_their_code(cli, tmp_path: Path):
    r = cli("deploy", "--target", "nowhere", "--budget", "40ms")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "unknown target 'nowhere'" in r.err
    bad = tmp_path / "plan"
    bad.mkdir()
    (bad / "plan.json").write_text('{"format": "edgekit-plan/99"}')
    r = cli("elastic", "show", str(bad))
    assert r.code == 3 and "newer than this edgekit reads" in r.err and "Traceback" not in r.err


def test_the_readme_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    main, tests = blocks[0], blocks[1]
    assert readme.index(main) < readme.index("\n## ")
    assert "models pull smollm2-135m" in main and "deploy --target host --budget" in main and "chat " in main
    assert tests == "bash scripts/install.sh dev && .venv/bin/python -m pytest"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/install.sh dev" in ci and ".venv/bin/python -m pytest" in ci
    assert "ruff format --check" in ci


def test_the_benchmark_page_is_what_the_results_say():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import report
    finally:
        sys.path.remove(str(ROOT / "bench"))
    assert (ROOT / "docs" / "benchmarks.md").read_text() == report.render(), "run python bench/report.py"


def test_docs_link_to_pages_that_exist():
    pages = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).is_file(), f"{page.name} links to {target}"


@pytest.mark.parametrize("module", ["edgekit.deployment", "edgekit.elastic", "edgekit.cli"])
def test_nothing_imports_another_subpackage_s_private_names(module: str):
    """A name starting with _ stays inside its own subpackage."""
    package = module.split(".")[1]
    offenders = []
    for path in (ROOT / "edgekit").rglob("*.py"):
        if path.parent.name == package or package in path.relative_to(ROOT / "edgekit").parts[:1]:
            continue
        for line in path.read_text().splitlines():
            if re.match(rf"\s*from {re.escape(module)}[\w.]* import .*\b_[a-z]", line):
                offenders.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    for path in (ROOT / "bench").glob("*.py"):
        for line in path.read_text().splitlines():
            if re.match(rf"\s*from {re.escape(module)}[\w.]* import .*\b_[a-z]", line):
                offenders.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert not offenders, offenders


def test_console_script_prints_one_line_without_traceback(edgekit_home):
    env = {**os.environ, "EDGEKIT_HOME": str(edgekit_home)}
    done = subprocess.run(
        [sys.executable, "-m", "edgekit", "models", "pull", "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "unknown model 'nope'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["deploy", "--target", "host"], "Missing option '--budget'"),
        (["serve", "/nowhere", "--port", "99999"], "Invalid value for '--port'"),
        (["--bogus"], "No such option: --bogus"),
        (["deploy", "--target", "host", "--budget", "80%", "--prompt-len", "0"], "'--prompt-len'"),
        (["elastic", "router", "--max-prompts", "3"], "'--max-prompts'"),
        (["export", "gguf"], "Missing option '--out'"),
    ],
)
def test_a_usage_error_is_one_line_not_a_panel(cli, argv: list[str], fragment: str) -> None:
    """Click parses the command line; what it refuses is printed as one line, as edgekit's own errors are."""
    r = cli(*argv)
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert r.code == 2 and len(lines) == 1 and lines[0].startswith("error:"), r.err
    assert fragment in lines[0] and "--help" in lines[0] and "╭" not in r.err


def test_a_corrupt_config_is_a_corrupt_artifact_exit_3(cli, tiny_llama_dir: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "model"
    shutil.copytree(tiny_llama_dir, broken)
    (broken / "config.json").write_text("{not json")
    r = cli("generate", "hi", "--model", str(broken))
    assert r.code == 3 and "config.json is unreadable" in r.err and len(r.err.strip().splitlines()) == 1
