"""The message log: one Markdown block per message, the reply being made streamed into its block."""

from __future__ import annotations

from textual.containers import VerticalScroll
from textual.widgets import Markdown, Static


class MessageBlock(Markdown):
    DEFAULT_CSS = """
    MessageBlock { margin: 0 1 1 1; padding: 0 1; }
    MessageBlock.user { background: $boost; border-left: thick $accent; }
    MessageBlock.assistant { border-left: thick $success; }
    MessageBlock.system { color: $text-muted; border-left: thick $warning; }
    """


class StreamingBlock(Static):
    """The reply being made, as plain text: re-rendering Markdown for every piece would take CPU
    from the runtime on a small machine. It becomes a MessageBlock when the reply is done."""

    DEFAULT_CSS = """
    StreamingBlock { margin: 0 1 1 1; padding: 0 1; border-left: thick $success; height: auto; }
    """


class Notice(Static):
    DEFAULT_CSS = """
    Notice { margin: 0 1 1 1; color: $warning; text-style: italic; }
    """


class MessageLog(VerticalScroll):
    DEFAULT_CSS = """
    MessageLog { height: 1fr; }
    """

    def add(self, role: str, text: str) -> MessageBlock:
        block = MessageBlock(text, classes=role)
        self.mount(block)
        self.scroll_end(animate=False)
        return block

    def add_streaming(self) -> StreamingBlock:
        block = StreamingBlock("…", markup=False)
        self.mount(block)
        self.scroll_end(animate=False)
        return block

    async def finish_streaming(self, block: StreamingBlock, text: str) -> MessageBlock:
        final = MessageBlock(text, classes="assistant")
        await self.mount(final, after=block)
        await block.remove()
        self.scroll_end(animate=False)
        return final

    def notice(self, text: str) -> Notice:
        note = Notice(text)
        self.mount(note)
        self.scroll_end(animate=False)
        return note

    def clear(self) -> None:
        self.remove_children()
