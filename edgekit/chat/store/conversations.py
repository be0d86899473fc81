"""Conversations as JSONL files: one file per conversation, a header line then one line per message.

Appending a message appends a line (a crash loses at most the reply being written); renaming or
changing the system prompt rewrites the small file atomically. The folder is
$EDGEKIT_DATA/conversations, else the platform's user data dir (~/.local/share/edgekit on Linux).
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit.artifacts import utc_now
from edgekit.errors import IntegrityError
from edgekit.formats import tag, upgrade

FORMAT = tag("edgekit-conversation")


def data_dir() -> Path:
    env = os.environ.get("EDGEKIT_DATA")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("edgekit"))


@dataclass
class Message:
    role: str  # system | user | assistant
    content: str
    time: str = field(default_factory=utc_now)
    stats: dict[str, Any] | None = None  # assistant replies: ms/token, tokens, cancelled...

    def as_chat(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass
class Conversation:
    id: str
    title: str
    created: str
    system: str | None = None
    deployment: str | None = None
    messages: list[Message] = field(default_factory=list)

    def chat_messages(self) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [m.as_chat() for m in self.messages]

    def header(self) -> dict[str, Any]:
        return {"type": "meta", "format": FORMAT, "id": self.id, "title": self.title, "created": self.created,
                "system": self.system, "deployment": self.deployment}  # fmt: skip


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


class Store:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or data_dir() / "conversations"

    def _path(self, conv_id: str) -> Path:
        return self.root / f"{conv_id}.jsonl"

    def create(self, title: str = "New chat", system: str | None = None, deployment: str | None = None) -> Conversation:
        conv = self.new(title, system, deployment)
        self._rewrite(conv)
        return conv

    def new(self, title: str = "New chat", system: str | None = None, deployment: str | None = None) -> Conversation:
        """A conversation not yet on disk: its file is written with its first message, so a turn that fails
        before anything is said leaves no empty conversation behind."""
        return Conversation(uuid.uuid4().hex[:12], title, utc_now(), system, deployment)

    def append(self, conv: Conversation, message: Message) -> None:
        conv.messages.append(message)
        path = self._path(conv.id)
        if not path.is_file():  # the first message of a conversation made with new()
            self._rewrite(conv)
            return
        # a file cut mid-line by a crash ends without a newline: start on a fresh line, or this message would
        # be glued to the broken one and lost with it when read
        broken = path.is_file() and path.stat().st_size > 0 and not _ends_with_newline(path)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(("\n" if broken else "") + json.dumps({"type": "message", **asdict(message)}, ensure_ascii=False)
                     + "\n")  # fmt: skip

    def rename(self, conv: Conversation, title: str) -> None:
        conv.title = title.strip() or conv.title
        self._rewrite(conv)

    def set_system(self, conv: Conversation, system: str | None) -> None:
        conv.system = system.strip() if system and system.strip() else None
        if self._path(conv.id).is_file():
            self._rewrite(conv)

    def delete(self, conv: Conversation) -> None:
        self._path(conv.id).unlink(missing_ok=True)

    def _rewrite(self, conv: Conversation) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps(conv.header(), ensure_ascii=False)]
        lines += [json.dumps({"type": "message", **asdict(m)}, ensure_ascii=False) for m in conv.messages]
        tmp = self._path(conv.id).with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, self._path(conv.id))

    def load(self, conv_id: str) -> Conversation:
        return self._read(self._path(conv_id))

    def _read(self, path: Path) -> Conversation:
        conv: Conversation | None = None
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash: skip it, keep the rest
            if row.get("type") == "meta":
                row = upgrade("edgekit-conversation", row, f"conversation {path.name}")
                conv = Conversation(row["id"], row["title"], row["created"], row.get("system"), row.get("deployment"))
            elif row.get("type") == "message" and conv is not None:
                conv.messages.append(Message(row["role"], row["content"], row.get("time", ""), row.get("stats")))
        if conv is None:
            raise ValueError(f"{path} is not a conversation file")
        return conv

    def list(self) -> list[Conversation]:
        """Every readable conversation, the most recently changed first."""
        if not self.root.is_dir():
            return []
        paths = sorted(self.root.glob("*.jsonl"), key=lambda p: p.stat().st_mtime, reverse=True)
        found = []
        for path in paths:
            try:
                found.append(self._read(path))
            except (OSError, ValueError, KeyError, IntegrityError):
                continue  # a damaged file, or one from a newer edgekit: the rest still open
        return found
