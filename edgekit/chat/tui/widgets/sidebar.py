"""The conversation list: the saved conversations, newest first; selecting one reopens it."""

from __future__ import annotations

from textual.message import Message
from textual.widgets import ListItem, ListView, Static

from edgekit.chat.store.conversations import Conversation


class ConversationItem(ListItem):
    def __init__(self, conv: Conversation) -> None:
        super().__init__(Static(conv.title or "untitled"))
        self.conv = conv


class Sidebar(ListView):
    DEFAULT_CSS = """
    Sidebar { width: 26; border-right: tall $panel; }
    """

    class Opened(Message):
        def __init__(self, conv: Conversation) -> None:
            super().__init__()
            self.conv = conv

    def show(self, conversations: list[Conversation], current: str | None) -> None:
        self.clear()
        for conv in conversations:
            self.append(ConversationItem(conv))
        for i, conv in enumerate(conversations):
            if conv.id == current:
                self.index = i

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        event.stop()
        if isinstance(event.item, ConversationItem):
            self.post_message(self.Opened(event.item.conv))
