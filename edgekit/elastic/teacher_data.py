"""Teacher-generated chat data: the base instruct model's own replies to prompts, as instruction/response
JSONL that a recipe mixes into training (`data.chat`).

Fine-tuning only on plain text teaches subnets the text, not the turn-taking of the instruct model they
were cut from: a stage-1 subnet asked a question tends to answer with end-of-turn at once or with
text-continuation. Replies written by the full model carry its chat manners, and in-place
distillation on them teaches every shape to follow the full model on chat-formatted inputs.

Prompts come from a file (one per line), from the headings of a reStructuredText/Markdown corpus, or from
the functions, classes and exceptions a Sphinx corpus documents (`.. function:: name(...)`), turned into the
questions users ask about an API. Both read the training corpus itself, so nothing leaks from evaluation data.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import UsageError
from edgekit.formats import tag

FORMAT = tag("edgekit-teacher-data")
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")

RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+])\1{2,}\s*$")
DASHES = re.compile(r"\s+-{2,3}\s+")  # "module --- what it is", also with two dashes
RST_ROLE = re.compile(r":[\w:-]+:`~?([^`<]+?)(?:\s*<[^>]*>)?`")
TEMPLATES = (  # phrased to fit any noun-phrase heading: a module, a PEP, a how-to title
    "Explain {} briefly.",
    "What should I know about {}?",
    "Give me a short overview of {}.",
    "I'm reading the Python docs on {}. What is it about?",
    "Write a short note about {} for a Python developer.",
)


@dataclass
class TeacherSettings:
    max_new_tokens: int = 160
    temperature: float = 0.7  # sampled, not greedy: greedy replies of a 135M model loop more often
    top_p: float = 0.9
    batch_size: int = 16
    seed: int = 0
    samples: int = 1  # sampled replies per prompt: more of the teacher's distribution per instruction

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def clean_heading(text: str) -> str:
    text = RST_ROLE.sub(r"\1", text.strip().lstrip("#").strip())
    text = text.replace("``", "").replace("*", "").strip(" :.-")
    # ":mod:`asyncio` --- Asynchronous I/O" -> "asyncio (Asynchronous I/O)"
    parts = DASHES.split(text, maxsplit=1)
    return f"{parts[0].strip()} ({parts[1].strip()})" if len(parts) == 2 and parts[1].strip() else text


def headings(text: str) -> list[str]:
    """Section titles of reStructuredText (underlined) and Markdown (# ...) documents, cleaned, deduplicated."""
    lines = text.splitlines()
    found: list[str] = []
    for i, line in enumerate(lines):
        below = lines[i + 1] if i + 1 < len(lines) else ""
        markdown = line.startswith("#") and not line.startswith("#!") and len(line.strip("# ")) > 2
        # an rst title is underlined at least as long as itself
        rst = bool(line.strip()) and not RST_UNDERLINE.match(line) and bool(RST_UNDERLINE.match(below))
        rst = rst and len(below.rstrip()) >= len(line.rstrip()) - 1
        if markdown or rst:
            title = line
            cleaned = clean_heading(title)
            if 3 <= len(cleaned) <= 80 and any(c.isalpha() for c in cleaned):
                found.append(cleaned)
    return list(dict.fromkeys(found))


API_DIRECTIVE = re.compile(r"^\.\. (function|method|class|exception|decorator|module|currentmodule)::\s*([\w.]+)")
API_TEMPLATES = {  # asked the way users ask about an API: what it does, how to use it, when it is raised
    "function": ("What does {}() do in Python?", "How do I use {}() in Python? Show a short example."),
    "method": ("What does the {}() method do in Python?", "How do I call {}() in Python? Show a short example."),
    "decorator": ("What does the @{} decorator do in Python?", "How do I use the @{} decorator in Python?"),
    "class": ("What is {} in Python used for?", "How do I create and use a {} object in Python?"),
    "exception": ("When does Python raise {}?", "How do I handle {} in Python?"),
    "module": ("What is the {} module in Python for?", "Show me how to use Python's {} module."),
}


def api_names(text: str) -> list[tuple[str, str]]:
    """(kind, qualified name) of every function, method, class, exception, decorator and module a Sphinx
    corpus documents, in order, deduplicated; a bare name gets the module it is documented under."""
    module, found = "", []
    for line in text.splitlines():
        m = API_DIRECTIVE.match(line)
        if not m:
            continue
        kind, name = m.groups()
        name = name.strip(".")
        if kind in ("module", "currentmodule"):
            module = name
            if kind == "currentmodule":
                continue
        elif module and "." not in name:
            name = f"{module}.{name}"
        if name and not name.split(".")[-1].startswith("_"):  # dunders and privates read badly as questions
            found.append((kind, name))
    return list(dict.fromkeys(found))


def _shuffled(path: Path, items: Callable[[str], list[Any]], none: str, seed: int) -> list[Any]:
    """What `items` finds in the corpus at `path`, in a seeded order; `none` (after the path) when nothing."""
    if not path.is_file():
        raise UsageError(f"prompt source not found: {path}")
    found = items(path.read_text(encoding="utf-8", errors="replace"))
    if not found:
        raise UsageError(f"{path} {none}")
    random.Random(seed).shuffle(found)
    return found


def api_prompts(path: Path, count: int, seed: int = 0) -> list[str]:
    """`count` questions about the API a Sphinx corpus documents (one per name, templates alternating)."""
    names = _shuffled(path, api_names, "documents no functions, classes or modules (Sphinx directives) to ask about",
                      seed)  # fmt: skip
    return [API_TEMPLATES[kind][i % 2].format(name) for i, (kind, name) in enumerate(names[:count])]


def prompts_from_text(path: Path, count: int, seed: int = 0) -> list[str]:
    titles = _shuffled(path, headings, "has no reStructuredText or Markdown headings to make prompts from", seed)
    return [TEMPLATES[i % len(TEMPLATES)].format(t) for i, t in enumerate(titles[:count])]


PROMPT_KEYS = ("prompt", "instruction", "question", "input")
DEV_SHARE = 0.10  # of a prompt file, held apart from training for the chat metrics (and the router's data)


def read_prompts(path: Path) -> list[str]:
    """Prompts from a file: JSONL rows with a prompt (or instruction/question/input) field, or plain text, one
    prompt per line. A bad JSONL line is refused by its number."""
    if not path.is_file():
        raise UsageError(f"prompt file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None
    jsonl = path.suffix in (".jsonl", ".json") or any(ln.lstrip().startswith("{") for ln in lines[:5])
    prompts: list[str] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if not jsonl:
            prompts.append(line.strip())
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise UsageError(f"{path}:{n} is not valid JSON (a prompt file is JSONL or one prompt per line)") from None
        prompt = next((row[k] for k in PROMPT_KEYS if isinstance(row, dict) and k in row), None)
        if not isinstance(prompt, str) or not prompt.strip():
            raise UsageError(f"{path}:{n} has no prompt (a string under one of: {', '.join(PROMPT_KEYS)})")
        prompts.append(prompt.strip())
    if not prompts:
        raise UsageError(f"{path} holds no prompts")
    return prompts


def is_dev_prompt(prompt: str, share: float = DEV_SHARE) -> bool:
    """Whether a prompt belongs to the held-apart dev split: a hash of its text, so the split is the same for
    every file the prompt appears in, every run and every command (teacher data, chat metrics, the router)."""
    return int(hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:8], 16) < share * 16**8


def split_prompts(prompts: list[str], part: str, share: float = DEV_SHARE) -> list[str]:
    """The `train` or `dev` part of prompts (or `all`), in file order, duplicates dropped."""
    if part not in ("train", "dev", "all"):
        raise UsageError(f"--part must be train, dev or all, not {part}")
    unique = list(dict.fromkeys(prompts))
    if part == "all":
        return unique
    return [p for p in unique if is_dev_prompt(p, share) == (part == "dev")]


def prompts_from_file(path: Path, count: int, part: str = "all") -> list[str]:
    return split_prompts(read_prompts(path), part)[:count]


def generate_replies(
    model_dir: Path,
    prompts: list[str],
    settings: TeacherSettings,
    device: str = "cpu",
    on_batch: Callable[[float], None] | None = None,
    journal: Path | None = None,
) -> list[dict[str, Any]]:
    """The model's reply to each prompt, in batches with left padding; replies cut at end-of-turn. With a
    `journal`, each finished batch is appended to it and a rerun with the same model, prompts and settings
    continues after the last one (each batch is seeded by its position, so the result is the same)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"  # decoder-only batches generate from the right edge
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    rows: list[dict[str, Any]] = []
    vocab = tokenizer.get_vocab()
    eos = {tokenizer.eos_token_id, *(vocab[t] for t in END_OF_TURN if t in vocab)}
    asked = [p for p in prompts for _ in range(settings.samples)]
    # a batch is reused when the run's model and settings and the batch's own prompts are the same, so a
    # rerun with more or fewer prompts keeps the batches they share
    key = hashlib.sha256(json.dumps([str(model_dir), settings.to_dict()]).encode()).hexdigest()
    done = read_journal(journal, key) if journal else {}
    if journal is not None and not done:
        journal.write_text(json.dumps({"key": key}) + "\n")
    for start in range(0, len(asked), settings.batch_size):
        batch = asked[start : start + settings.batch_size]
        if start in done and done[start][0] == batch:
            rows += done[start][1]
            if on_batch:
                on_batch(len(batch) / settings.samples)
            continue
        torch.manual_seed(settings.seed * 1_000_003 + start)
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in batch
        ]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.no_grad():
            out = model.generate(
                **enc, max_new_tokens=settings.max_new_tokens, do_sample=settings.temperature > 0,
                temperature=settings.temperature if settings.temperature > 0 else None,
                top_p=settings.top_p if settings.temperature > 0 else None, pad_token_id=tokenizer.pad_token_id,
            )  # fmt: skip
        made = []
        for prompt, ids in zip(batch, out[:, enc["input_ids"].shape[1] :], strict=True):
            ids = ids.tolist()
            # a reply that ran out of tokens has no end of turn: training must not teach it to stop there
            finished = any(t in eos for t in ids)
            reply = tokenizer.decode(ids, skip_special_tokens=True).strip()
            if reply:
                made.append({"prompt": prompt, "response": reply, "finished": finished})
        rows += made
        if journal is not None:
            with journal.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"batch": start, "prompts": batch, "rows": made}, ensure_ascii=False) + "\n")
        if on_batch:
            on_batch(len(batch) / settings.samples)
    return rows


def read_journal(journal: Path, key: str) -> dict[int, tuple[list[str], list[dict[str, Any]]]]:
    """(prompts, rows) of each batch a journal of the same model and settings holds, by its start (a torn
    last line is dropped); {} for another run's."""
    if not journal.is_file():
        return {}
    lines = journal.read_text(encoding="utf-8").splitlines()
    try:
        if json.loads(lines[0]).get("key") != key:
            return {}
    except (IndexError, json.JSONDecodeError, AttributeError):
        return {}
    done: dict[int, tuple[list[str], list[dict[str, Any]]]] = {}
    for line in lines[1:]:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            break  # the line a killed run was writing
        prompts = entry.get("prompts") or [r["prompt"] for r in entry["rows"]]
        done[int(entry["batch"])] = (prompts, entry["rows"])
    return done


def write_jsonl(rows: list[dict[str, Any]], out: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The JSONL and a sidecar saying how it was made (with the JSONL's sha256), each written whole or not at all."""
    from edgekit.artifacts import utc_now, write_json_atomic

    out.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    tmp = out.with_name(out.name + ".partial")
    tmp.write_bytes(body)
    tmp.replace(out)
    meta = {**meta, "rows": len(rows), "sha256": hashlib.sha256(body).hexdigest(),
            "written": utc_now()}  # fmt: skip
    write_json_atomic(out.with_name(out.name + ".meta.json"), meta)
    return meta


def make_teacher_data(
    out: Path, prompts: list[str], source: str, model: str, settings: TeacherSettings, device: str = "auto",
    on_batch: Callable[[float], None] | None = None, split: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The model's replies to `prompts`, written to `out` with its sidecar; returns the sidecar."""
    from edgekit.elastic.train import resolve_device
    from edgekit.models.reference import local_folder, resolve

    folder = local_folder(resolve(model))
    dev = resolve_device(device)
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    journal = out.with_name(out.name + ".journal")
    rows = generate_replies(folder, prompts, settings, dev, on_batch=on_batch, journal=journal)
    seconds = round(time.perf_counter() - start, 1)
    meta = {"format": FORMAT, "teacher": str(folder), "source": source, "prompts": len(prompts),
            "settings": settings.to_dict(), "device": dev, "seconds": seconds,
            "finished": sum(r["finished"] for r in rows), **({"split": split} if split else {})}  # fmt: skip
    written = write_jsonl(rows, out, meta)
    journal.unlink(missing_ok=True)
    return written
