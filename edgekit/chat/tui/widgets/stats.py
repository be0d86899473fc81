"""The stats panel: how the subnet is doing against its budget, updated per token."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, Sparkline, Static

from edgekit.chat.engine import Info, Stats

SPARK_POINTS = 60


def process_memory_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def gpu_memory() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        mem = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0))
        return f"{mem.used / 2**30:.1f}/{mem.total / 2**30:.1f} GB"
    except Exception:  # no NVIDIA driver or no nvidia-ml-py: nothing to show
        return None


class StatsPanel(Vertical):
    """ms/token against the budget (sparkline), tokens/s, first token, context, memory, where it runs."""

    DEFAULT_CSS = """
    StatsPanel { width: 34; padding: 0 1; border-left: tall $panel; }
    StatsPanel #spark { height: 3; margin: 0 0 1 0; }
    StatsPanel .title { text-style: bold; color: $accent; }
    StatsPanel #figures { height: auto; }
    StatsPanel #where { height: auto; margin-top: 1; color: $text-muted; }
    """

    def __init__(self, info: Info, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.info = info
        self.last: Stats | None = None

    def compose(self) -> ComposeResult:
        yield Label("ms/token", classes="title")
        yield Sparkline([], id="spark", summary_function=max)
        yield Static(id="figures")
        yield Static(self._where(), id="where")

    def on_mount(self) -> None:
        self.show(None)

    def _where(self) -> str:
        i = self.info
        lut = {"measured": "LUT measured", "estimated": "LUT ESTIMATED"}.get(i.lut_status or "", "no LUT")
        budget = f"budget {i.budget_text}" if i.budget_text else "no budget"
        quality = f"\nquality {i.quality}" if i.quality else ""
        routed = f"\n{i.routed}" if i.routed else ""
        return (
            f"model   {i.model}\nshape   {i.shape}\nruntime {i.runtime} {i.precision}\n"
            f"device  {i.device}\n{budget}\n{lut}{quality}{routed}"
        )

    def set_info(self, info: Info) -> None:
        self.info = info
        self.query_one("#where", Static).update(self._where())

    def show(self, stats: Stats | None) -> None:
        self.last = stats
        self.query_one("#spark", Sparkline).data = list(stats.ms_per_token[-SPARK_POINTS:]) if stats else []
        budget = self.info.budget_ms
        lines = []
        mean = stats.mean_ms if stats else None
        last = stats.ms_per_token[-1] if stats and stats.ms_per_token else None
        if mean is not None:
            mark = "" if budget is None else (" [red]over[/]" if mean > budget else " [green]ok[/]")
            lines.append(f"now {last:.1f}  mean {mean:.1f} ms{mark}")
        else:
            lines.append("now -  mean - ms")
        lines.append(f"budget {budget:.3g} ms/token" if budget else "budget -")
        tps = stats.tokens_per_s if stats else None
        lines.append(f"tokens/s {tps:.1f}" if tps else "tokens/s -")
        ttft = stats.ttft_ms if stats else None
        lines.append(f"first token {ttft:.0f} ms" if ttft is not None else "first token -")
        if stats:
            lines.append(f"prompt {stats.prompt_tokens} tok")
            lines.append(f"context {stats.context_tokens}/{self.info.context_length}")
        else:
            lines.append("prompt -")
            lines.append(f"context 0/{self.info.context_length}")
        lines.append(f"memory {process_memory_mb():.0f} MB")
        gpu = gpu_memory() if self.info.device == "cuda" else None
        if gpu:
            lines.append(f"gpu {gpu}")
        self.query_one("#figures", Static).update("\n".join(lines))
