"""`edgekit chat --plain`: a line-based REPL on stdin/stdout with the same engine as the TUI.

Used automatically when stdout is not a terminal. `--prompt TEXT` answers one turn and exits
(`--json` prints the reply and its figures as one JSON object). Every turn is saved to the
conversation store, so a plain session shows up in the TUI's history.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import TextIO

from edgekit.chat.engine import ChatEngine, Stats
from edgekit.chat.store.conversations import Conversation, Message, Store
from edgekit.engines import Sampling
from edgekit.errors import UsageError, utf8_text

COMMANDS = "/new starts a new conversation, /system TEXT sets the system prompt, /quit (or Ctrl-D) leaves"


def stats_line(engine: ChatEngine, stats: Stats) -> str:
    info = engine.info
    parts = [f"{stats.new_tokens} tokens"]
    if stats.mean_ms:
        over = ""
        if info.budget_ms:
            over = " (over budget)" if stats.mean_ms > info.budget_ms else f" (budget {info.budget_ms:.3g})"
        parts.append(f"{stats.mean_ms:.1f} ms/token{over}, {stats.tokens_per_s:.1f} tok/s")
    if stats.ttft_ms is not None:
        parts.append(f"first token {stats.ttft_ms:.0f} ms")
    parts.append(f"context {stats.context_tokens}/{info.context_length}")
    parts.append(f"{info.shape} {info.runtime} {info.precision} {info.device}")
    if info.routed and engine.routed_ms:
        parts.append(info.routed)
    speculation = engine.speculation
    if speculation is not None:
        parts.append(f"draft {info.draft}: {speculation.acceptance:.0%} of drafted tokens kept, "
                     f"{speculation.tokens_per_pass:.2f} tokens per pass")  # fmt: skip
    if stats.dropped_turns:
        parts.append(f"{stats.dropped_turns} oldest messages dropped to fit the context")
    if stats.cancelled:
        parts.append("stopped")
    if stats.looped:
        parts.append("stopped: the reply began repeating itself")
    return ", ".join(parts)


def one_turn(
    engine: ChatEngine, store: Store, conv: Conversation, prompt: str, sampling: Sampling, out: TextIO, stream: bool
) -> tuple[str, Stats]:
    if not prompt.strip():
        raise UsageError("the prompt is empty")
    # refused before anything is stored: a message too long for the context window leaves no trace
    engine.check_fits([*conv.chat_messages(), {"role": "user", "content": prompt}], sampling)
    store.append(conv, Message("user", prompt))
    text, stats = "", Stats()
    cancel = threading.Event()
    try:
        for piece in engine.reply(conv.chat_messages(), sampling, cancel):
            text += piece.text
            stats = piece.stats
            if stream and piece.text:
                out.write(piece.text)
                out.flush()
    except KeyboardInterrupt:
        stats.cancelled = True  # Ctrl-C stops the reply; what was said so far is kept
    store.append(conv, Message("assistant", text.strip(), stats=stats.to_dict()))
    return text.strip(), stats


def run_plain(
    engine: ChatEngine,
    sampling: Sampling,
    system: str | None = None,
    prompt: str | None = None,
    json_out: bool = False,
    store: Store | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    # the streams as they are when called (a test's capture, a redirect), not as they were at import
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    store = store or Store()
    deployment = f"{engine.info.model} {engine.info.shape} {engine.info.runtime}"
    conv = store.new(title=(prompt or "Plain chat")[:40], system=system, deployment=deployment)
    if prompt is not None:
        text, stats = one_turn(engine, store, conv, prompt, sampling, stdout, stream=not json_out)
        if json_out:
            record = {"reply": text, "conversation": conv.id, **engine.info.to_dict(), "stats": stats.to_dict()}
            if engine.speculation is not None:
                record["speculation"] = engine.speculation.to_dict()
            stdout.write(json.dumps(record) + "\n")
        else:
            stdout.write("\n")
            stderr.write(stats_line(engine, stats) + "\n")
        return 0
    stderr.write(f"{deployment}: type a message; {COMMANDS}\n")
    while True:
        try:
            stdout.write("> ")
            stdout.flush()
            line = stdin.readline()
        except KeyboardInterrupt:
            stderr.write("\n")
            return 0
        if not line:  # EOF
            return 0
        line = line.rstrip("\n")
        try:
            utf8_text(line, "the message")
        except UsageError as exc:  # one bad line does not end the session
            stderr.write(f"error: {exc} (ignored)\n")
            continue
        if line.strip() in ("/quit", "/exit"):
            return 0
        if line.strip() == "/new":
            conv = store.new(system=conv.system, deployment=deployment)
            stderr.write("new conversation\n")
            continue
        if line.startswith("/system"):
            store.set_system(conv, line[len("/system") :])
            stderr.write(f"system prompt: {conv.system or '(template default)'}\n")
            continue
        if not line.strip():
            stderr.write("(empty message ignored)\n")
            continue
        try:
            _, stats = one_turn(engine, store, conv, line, sampling, stdout, stream=True)
        except UsageError as exc:  # too long for the context window: say so, and go on with the next line
            stderr.write(f"error: {exc} (not sent)\n")
            continue
        stdout.write("\n")
        stderr.write(stats_line(engine, stats) + "\n")
