"""An ollama Modelfile for an exported GGUF: the chat template in ollama's Go-template form, the default system
prompt and the stop tokens, read from the model's own Jinja chat template. ChatML templates (`<|im_start|>`
role turns, as SmolLM2, Qwen and many others use) are translated; any other template is refused with the
reason rather than guessed."""

from __future__ import annotations

import re
from pathlib import Path

from edgekit.errors import UsageError

CHATML_TEMPLATE = """{{ if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
# the default system prompt, after a newline written out or as the Jinja escape \n
DEFAULT_SYSTEM = re.compile(r"<\|im_start\|>system(?:\n|\\n)(.*?)<\|im_end\|>", re.S)


def modelfile(gguf_name: str, chat_template: str | None, params: dict[str, str] | None = None) -> str:
    """The Modelfile text for `ollama create NAME -f Modelfile` beside `gguf_name`."""
    if not chat_template or "<|im_start|>" not in chat_template:
        raise UsageError("the Modelfile is written for ChatML chat templates (<|im_start|>); this model's is not: "
                         "write its TEMPLATE by hand (ollama's docs/template.md)")  # fmt: skip
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{CHATML_TEMPLATE}"""']
    found = DEFAULT_SYSTEM.search(chat_template)
    if found:
        lines.append(f'SYSTEM """{found.group(1)}"""')
    lines += ['PARAMETER stop "<|im_end|>"', 'PARAMETER stop "<|im_start|>"']
    lines += [f"PARAMETER {k} {v}" for k, v in (params or {}).items()]
    return "\n".join(lines) + "\n"


def write_modelfile(folder: Path, gguf_name: str, chat_template: str | None) -> Path:
    path = folder / "Modelfile"
    path.write_text(modelfile(gguf_name, chat_template))
    return path
