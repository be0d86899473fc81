"""The `edgekit eval` command (edgekit.cli.evaluation): JSON and table output, plan shapes, and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import tiny
from tiny import PIQA_ROWS, write_piqa

from edgekit.errors import UsageError


def _app():
    import typer

    from edgekit.cli.evaluation import eval_cmd

    app = typer.Typer()
    app.command()(eval_cmd)
    return app


def test_eval_command_prints_json(tmp_path, tiny_llama_dir):
    from typer.testing import CliRunner

    text = tmp_path / "corpus.txt"
    text.write_text(tiny.CORPUS)
    mc = write_piqa(tmp_path, PIQA_ROWS, [0, 1, 0])
    args = ["--model", str(tiny_llama_dir), "--text", str(text), "--mc", str(mc), "--max-length", "32"]
    args += ["--stride", "16", "--text-tokens", "100", "--limit", "2", "--json"]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == tiny_llama_dir.name
    ppl = data["perplexity"]
    assert ppl["data"] == str(text) and ppl["max_length"] == 32 and ppl["stride"] == 16
    assert ppl["tokens"] == 100 and ppl["tokens_scored"] == 99 and ppl["ppl"] > 1
    choice = data["multiple_choice"]
    assert choice["n"] == 2 and 0 <= choice["acc"] <= 1 and 0 <= choice["acc_norm"] <= 1 and "stderr" in choice

    table = CliRunner().invoke(_app(), args[:-1])
    assert table.exit_code == 0, table.output
    assert "max_length 32 moving by stride 16" in table.stdout and "acc_norm" in table.stdout


def test_eval_command_needs_a_task_and_checks_data_before_loading(tmp_path):
    from typer.testing import CliRunner

    result = CliRunner().invoke(_app(), ["--model", str(tmp_path / "no-model")])
    assert isinstance(result.exception, UsageError) and "--text" in str(result.exception)
    # The data is read first: a missing file is reported, not the missing model.
    result = CliRunner().invoke(_app(), ["--model", str(tmp_path / "no-model"), "--text", str(tmp_path / "x.txt")])
    assert isinstance(result.exception, UsageError) and "text file not found" in str(result.exception)


def test_eval_scores_a_plan_shape(tiny_plan: Path, calib_text: Path, cli):
    args = [
        "eval",
        "--plan",
        str(tiny_plan),
        "--text",
        str(calib_text),
        "--max-length",
        "64",
        "--stride",
        "32",
        "--json",
    ]
    full = cli(*args, "--shape", "full")
    narrow = cli(*args, "--shape", "d3-w34")
    assert full.code == 0 and narrow.code == 0, full.err + narrow.err
    f, n = json.loads(full.out), json.loads(narrow.out)
    assert f["model"] == "tiny-plan:d6-f100-h3" and n["model"] == "tiny-plan:d3-f25-h1"
    assert f["perplexity"]["ppl"] != n["perplexity"]["ppl"]


def test_eval_shape_needs_a_plan_and_lm_eval_needs_its_package(cli, monkeypatch):
    result = cli("eval", "--shape", "d20-w75", "--text", "x.txt")
    assert result.code == 2 and "--shape needs --plan or --elastic" in result.err
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a))
    result = cli("eval", "--lm-eval", "piqa")
    assert result.code == 4 and "pip install lm-eval" in result.err
