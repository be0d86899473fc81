"""Save the README's screenshot of `edgekit chat`: a real deployment answering one prompt, headless.

.venv/bin/python scripts/chat_screenshot.py DEPLOYMENT docs/chat.svg   (then rsvg-convert to PNG)
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path


async def shoot(deployment: Path, out: Path) -> None:
    from edgekit.chat.engine import ChatEngine
    from edgekit.chat.store.conversations import Store
    from edgekit.chat.tui.app import ChatApp
    from edgekit.engines import Sampling

    with tempfile.TemporaryDirectory() as tmp:
        app = ChatApp(ChatEngine.from_deployment(deployment), Sampling(max_new_tokens=96), store=Store(Path(tmp)))
        async with app.run_test(size=(120, 32)) as pilot:
            app.query_one("#prompt").value = "What is the capital of France, and what is it famous for?"
            await pilot.press("enter")
            while app.replies == 0:
                await pilot.pause(0.05)
            await pilot.pause(0.3)
            app.save_screenshot(filename=out.name, path=str(out.parent))


if __name__ == "__main__":
    asyncio.run(shoot(Path(sys.argv[1]), Path(sys.argv[2])))
