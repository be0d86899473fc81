"""Small modal dialogs: all keyboard-driven (Enter accepts, Esc cancels), so they work over SSH."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Markdown

DIALOG_CSS = """
{name} {{ align: center middle; }}
{name} > Vertical {{ width: 64; height: auto; padding: 1 2; border: thick $accent; background: $surface; }}
{name} .error {{ color: $error; height: auto; }}
"""


class TextDialog(ModalScreen[str | None]):
    """One line of text: rename a conversation, set the system prompt."""

    DEFAULT_CSS = DIALOG_CSS.format(name="TextDialog")
    AUTO_FOCUS = "*"  # the app focuses its prompt; a dialog focuses its own first field
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, value: str = "", placeholder: str = "") -> None:
        super().__init__()
        self.title_text, self.value, self.placeholder = title, value, placeholder

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text)
            yield Input(self.value, placeholder=self.placeholder, id="text")
            yield Label("Enter to save, Esc to cancel", classes="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmDialog(ModalScreen[bool]):
    DEFAULT_CSS = DIALOG_CSS.format(name="ConfirmDialog")
    AUTO_FOCUS = "*"  # the app focuses its prompt; a dialog focuses its own first field
    BINDINGS = [Binding("y,enter", "yes", "Yes"), Binding("n,escape", "no", "No")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question)
            yield Label("y / Enter: yes    n / Esc: no")

    def action_yes(self) -> None:
        self.dismiss(True)

    def action_no(self) -> None:
        self.dismiss(False)


@dataclass
class Settings:
    temperature: float
    top_p: float
    max_tokens: int


class SettingsDialog(ModalScreen[Settings | None]):
    """Generation settings; values are checked before the dialog closes."""

    DEFAULT_CSS = DIALOG_CSS.format(name="SettingsDialog")
    AUTO_FOCUS = "*"  # the app focuses its prompt; a dialog focuses its own first field
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, current: Settings) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        c = self.current
        with Vertical():
            yield Label("Generation settings (Tab moves, Enter saves, Esc cancels)")
            yield Label("temperature (0 = greedy)")
            yield Input(str(c.temperature), id="temperature")
            yield Label("top-p (0-1]")
            yield Input(str(c.top_p), id="top_p")
            yield Label("max tokens per reply")
            yield Input(str(c.max_tokens), id="max_tokens")
            yield Label("", id="error", classes="error")

    def on_input_submitted(self, _: Input.Submitted) -> None:
        try:
            t = float(self.query_one("#temperature", Input).value)
            p = float(self.query_one("#top_p", Input).value)
            n = int(self.query_one("#max_tokens", Input).value)
            if t < 0 or not 0 < p <= 1 or n < 1:
                raise ValueError
        except ValueError:
            self.query_one("#error", Label).update("temperature ≥ 0, 0 < top-p ≤ 1, max tokens ≥ 1")
            return
        self.dismiss(Settings(t, p, n))

    def action_cancel(self) -> None:
        self.dismiss(None)


HELP = """\
# edgekit chat

Type a message and press **Enter**. The reply streams in; the panel on the right shows
ms/token against the deployment's budget, tokens/s, time to first token, context used and memory.

| key | does |
| --- | --- |
| Enter | send |
| Esc | stop the reply at once |
| Ctrl+N | new conversation |
| Ctrl+R | rename this conversation |
| Ctrl+X | delete this conversation |
| Ctrl+S | edit the system prompt |
| Ctrl+G | generation settings (temperature, top-p, max tokens) |
| Ctrl+L | change shape live (torch runtime with an elastic checkpoint) |
| Tab / Shift+Tab | move between the list, the log and the prompt |
| Ctrl+T | light / dark theme |
| F1 | this help |
| Ctrl+Q or Ctrl+C | quit (history is saved as you go) |

When a conversation outgrows the context window, its oldest turns are left out of the prompt and a
notice says so. Conversations are saved as JSONL under the user data dir.
"""


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical { width: 80; height: 80%; border: thick $accent; background: $surface; }
    """
    AUTO_FOCUS = "*"  # the app focuses its prompt; a dialog focuses its own first field
    BINDINGS = [Binding("escape,f1,q", "close", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Markdown(HELP)

    def action_close(self) -> None:
        self.dismiss(None)


class ShapeDialog(ModalScreen[str | None]):
    """Pick the shape to run (torch on an elastic model): the plan's grid, with its accuracy when known."""

    DEFAULT_CSS = DIALOG_CSS.format(name="ShapeDialog") + "ShapeDialog OptionList { height: auto; max-height: 20; }"
    AUTO_FOCUS = "*"  # the app focuses its prompt; a dialog focuses its own first field
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, shapes: list[str], current: str, accuracy: dict[str, dict]) -> None:
        super().__init__()
        self.shapes, self.current, self.accuracy = shapes, current, accuracy

    def compose(self) -> ComposeResult:
        from textual.widgets import OptionList
        from textual.widgets.option_list import Option

        options = []
        for name in self.shapes:
            row = self.accuracy.get(name) or {}
            ppl = f"  ppl {row['ppl']:.1f}" if row.get("ppl") is not None else ""
            if row.get("chat_ppl") is not None:
                ppl += f"  chat_ppl {row['chat_ppl']:.1f}"
            if row.get("answer_rate") is not None:
                ppl += f"  answers {row['answer_rate']:.0%}"
            mark = "  (current)" if name == self.current else ""
            options.append(Option(f"{name}{ppl}{mark}", id=name))
        with Vertical():
            yield Label("Run another shape (slices of the same weights; Enter picks, Esc cancels)")
            yield OptionList(*options, id="shapes")

    def on_mount(self) -> None:
        from textual.widgets import OptionList

        ol = self.query_one(OptionList)
        ol.highlighted = self.shapes.index(self.current) if self.current in self.shapes else 0
        ol.focus()

    def on_option_list_option_selected(self, event: Any) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
