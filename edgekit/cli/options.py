"""Every flag of the `edgekit` command, declared once: one meaning and one help text wherever it appears.
Commands take these as their parameters' types, e.g. `json_out: Json = False`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgekit.errors import UsageError

# ------------------------------------------------------------------ output
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (progress stays on stderr).")]
_OUT = typer.Option(
    "--out", help="Where to write the result (the command says what it is); an existing one needs --force."
)
Out = Annotated[Path | None, _OUT]
OutRequired = Annotated[Path, _OUT]
Force = Annotated[
    bool, typer.Option("--force", help="Replace what is already there (what --out names, a cached model, a context).")
]
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Print every step and command that would run, and run none (container build still writes "
        "its context, to inspect).",
    ),
]

# ------------------------------------------------------------------ models and what subnets are cut from
Model = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Model: a cache name (smollm2-135m), a local Hugging Face folder or a hub id."),
]
BaseModel = Annotated[
    str | None,
    typer.Option(
        "--base-model", help="Where the plan's base weights are, when not where the plan says (a --model value)."
    ),
]
Plan = Annotated[
    str | None, typer.Option("--plan", help="Plan: a folder from `edgekit elastic plan`, or a shipped one's name.")
]
Elastic = Annotated[
    str | None,
    typer.Option(
        "--elastic", help="Elastic checkpoint: a folder from `edgekit elastic train`, or a shipped one's name."
    ),
]
_SHAPE = typer.Option("--shape", help="Shape: depth and width, e.g. d20-w61, or full.")
Shape = Annotated[str | None, _SHAPE]
ShapeRequired = Annotated[str, _SHAPE]
Shapes = Annotated[
    str | None,
    typer.Option(
        "--shapes", help="Shapes: a list (d30-w100,d20-w61) or a grid ('d30,24 x w100,61'); default: the source's."
    ),
]

# ------------------------------------------------------------------ targets and runtimes
_TARGET = typer.Option("--target", "-t", help="Target: a name or alias (`edgekit targets`), or host.")
Target = Annotated[str, _TARGET]
TargetOptional = Annotated[str | None, _TARGET]
Runtime = Annotated[
    str | None,
    typer.Option("--runtime", "-r", help="Runtime: ort, tvm, torch or mlc (default: the target's first usable)."),
]
Precision = Annotated[
    str | None, typer.Option("--precision", help="Precision: int4, fp16, fp32, q4f16_1, ... (default: the target's).")
]
BuildOption = Annotated[
    list[str] | None,
    typer.Option("--option", help="A runtime build option KEY=VALUE (repeatable), e.g. block_size=128."),
]
_DEPLOYMENT = typer.Option("--deployment", "-d", help="A deployment folder, from `edgekit deploy`.")
Deployment = Annotated[Path | None, _DEPLOYMENT]
DeploymentRequired = Annotated[Path, _DEPLOYMENT]

# ------------------------------------------------------------------ evaluation data
ChatPrompts = Annotated[
    Path | None,
    typer.Option(
        "--chat",
        help="A prompt file (JSONL with a prompt field, or one per line): chat metrics on its held-apart dev part, "
        "against the full model's greedy replies.",
    ),
]
Prompts = Annotated[
    Path | None, typer.Option("--prompts", help="A prompt file: JSONL with a prompt field, or one prompt per line.")
]
Text = Annotated[Path | None, typer.Option("--text", help="A plain-text file: sliding-window perplexity on it.")]
DevText = Annotated[
    Path | None,
    typer.Option(
        "--dev-text",
        help="Fit an accuracy predictor on this text (a plan's calibration text: past the "
        "tokens planning read) and rank every shape by it.",
    ),  # fmt: skip
]
MultipleChoice = Annotated[
    Path | None, typer.Option("--mc", help="Multiple-choice JSONL (PIQA's goal/sol1/sol2, or context/choices/label).")
]
Labels = Annotated[
    Path | None, typer.Option("--labels", help="PIQA labels file (default: <stem>-labels.lst beside --mc).")
]
Limit = Annotated[int | None, typer.Option("--limit", min=1, help="Score only the first N multiple-choice items.")]
TextTokens = Annotated[
    int | None, typer.Option("--text-tokens", min=2, help="Score at most this many tokens of --text.")
]
MaxLength = Annotated[int, typer.Option("--max-length", min=2, help="Perplexity window, in tokens.")]
Stride = Annotated[int, typer.Option("--stride", min=1, help="How far each perplexity window moves, in tokens.")]
_CALIB = typer.Option("--calib", help="Calibration text: the file a plan is made from (baselines need the same one).")
Calib = Annotated[Path | None, _CALIB]
CalibRequired = Annotated[Path, _CALIB]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder a recipe's relative data paths are read from (default: $EDGEKIT_DATASETS, else "
        "the recipe's own folder).",
    ),
]

# ------------------------------------------------------------------ generation
MaxNewTokens = Annotated[
    int, typer.Option("--max-new-tokens", min=1, help="Upper bound on a reply's length, in tokens.")
]
Temperature = Annotated[float, typer.Option("--temperature", min=0.0, help="Sampling temperature; 0 is greedy.")]
TopP = Annotated[float, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling's p (with temperature > 0).")]
StopLoops = Annotated[
    bool,
    typer.Option(
        "--stop-loops/--no-stop-loops",
        help="End a reply once its newest tokens repeat one block back to back (3 copies, 24 tokens or more); "
        "the text before is the model's own either way.",
    ),
]
System = Annotated[str | None, typer.Option("--system", help="System prompt (default: the chat template's own).")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed.")]
Device = Annotated[str, typer.Option("--device", help="Where to compute: auto, cpu or cuda.")]


def key_values(pairs: list[str] | None, flag: str) -> dict[str, str]:
    """Repeated `--flag KEY=VALUE` options as a dict; a pair without `=` or a key is a usage error."""
    found = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} takes KEY=VALUE, not '{pair}'")
        found[key] = value
    return found


def refuse_existing(path: Path, force: bool) -> None:
    """Before any work: a destination that exists (without --force) or cannot be written is refused."""
    from edgekit.artifacts import check_writable

    if path.exists() and not force:
        raise UsageError(f"{path} exists: pass --force to replace it")
    check_writable(path)


# a training run (elastic train, elastic trim)
Resume = Annotated[bool, typer.Option("--resume", help="Continue from the run folder's latest checkpoint.")]
Evaluate = Annotated[bool, typer.Option("--eval/--no-eval", help="Measure the accuracy table at the end.")]
Half = Annotated[bool, typer.Option("--half", help="Store the SMOL weights in fp16 (as shipped).")]

# a server's key (serve requires it, chat --url sends it)
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="EDGEKIT_API_KEY",
        show_envvar=False,
        help="The server's API key (serve requires it, chat --url sends it; default: $EDGEKIT_API_KEY).",
    ),
]
Draft = Annotated[
    str | None,
    typer.Option(
        "--draft",
        help="Self-speculative decoding: a smaller shape of the same checkpoint drafts tokens, the shape served "
        "verifies them (replies stay its own); deploy also takes auto (the pair `profile --drafts` measured fastest).",
    ),
]
DraftK = Annotated[int, typer.Option("--draft-k", help="Tokens the --draft shape proposes per verifier pass (1-16).")]
