"""A clerk's console (gateway/web/console) in a real browser page, driven through the
test hooks its README lists: waits on DOM state, never on time. Used by
tests/test_sessions_browser.py; Playwright is imported there (and skipped without it)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

WAIT_MS = 20_000  # generous: a noisy 2-core machine runs two gateways and two renderers
SHOTS = Path("/tmp/session-shots")  # a copy of every screenshot, for a person to look at
EXPECTED = ("WebSocket connection to",)  # console errors a network drop causes


class Clerk:
    """One clerk's console page, with the waits a test needs. ``errors`` collects the
    page's uncaught exceptions and console errors (except those a drop must cause);
    ``received`` counts the gateway's messages to the page by type."""

    def __init__(self, page: Any, name: str) -> None:
        self.page, self.name = page, name
        self.errors: list[str] = []
        self.received: Counter[str] = Counter()
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", self._console)
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))

    def _frame(self, payload: str | bytes) -> None:
        try:
            self.received[str(json.loads(payload).get("type"))] += 1
        except (ValueError, AttributeError):
            self.received["?"] += 1

    def _console(self, message: Any) -> None:
        if message.type == "error" and not message.text.startswith(EXPECTED):
            self.errors.append(message.text)

    def at(self, selector: str) -> Any:
        return self.page.locator(selector)

    async def state(self, selector: str, state: str, within_ms: float = WAIT_MS) -> None:
        await self.at(f'{selector}[data-state="{state}"]').wait_for(timeout=within_ms)

    async def seen(self, selector: str) -> None:
        await self.at(selector).first.wait_for(timeout=WAIT_MS)

    async def chat(self, text: str) -> None:
        await self.at("#chat-input").fill(text)
        await self.at("#chat-input").press("Enter")

    async def chat_lines(self) -> list[tuple[str, str, str]]:
        """(seq, side, text) of every sequenced chat line shown."""
        rows = self.at("[data-testid=chat-message]")
        return [(await r.get_attribute("data-seq"), await r.get_attribute("data-side"),
                 await r.locator(".text").inner_text()) for r in await rows.all()]

    async def has_chat(self, text: str) -> None:
        await self.at("[data-testid=chat-message] .text").filter(has_text=text) \
            .first.wait_for(timeout=WAIT_MS)

    async def until(self, script: str) -> None:
        """Wait until a JavaScript expression over the page holds (image and video
        sizes: what the DOM's attributes do not show)."""
        await self.page.wait_for_function(f"() => {script}", timeout=WAIT_MS)

    async def dump(self) -> str:
        """What the console holds, for a failure's message."""
        state = await self.page.evaluate(
            "() => { const s = window.tongbanConsole?.client.state || {};"
            " return JSON.stringify({conn: s.conn, seq: s.seq, link: s.link, peer: s.peer,"
            " pending: s.pending, notices: s.notices, events: (s.events || []).map("
            "e => [e.seq, e.side, e.type, e.reason || e.text || e.field || ''])}); }")
        return f"{self.name}: {state} errors={self.errors} received={dict(self.received)}"

    async def shot(self, folder: Path, label: str) -> Path:
        """A full-page screenshot in folder, copied to $TONGBAN_ARTIFACTS (when set) and
        to /tmp/session-shots."""
        path = folder / f"{label}-{self.name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        _keep(path)
        return path

    async def ink(self) -> int:
        """Dark pixels of the first signature image shown (0 for a blank pad)."""
        return int(await self.at("[data-testid=signature-image]").first.evaluate(
            """img => {
                 const c = document.createElement('canvas');
                 c.width = img.naturalWidth; c.height = img.naturalHeight;
                 const g = c.getContext('2d'); g.drawImage(img, 0, 0);
                 const d = g.getImageData(0, 0, c.width, c.height).data;
                 let n = 0;
                 for (let i = 0; i < d.length; i += 4) if (d[i] < 100 && d[i + 3] > 0) n++;
                 return n;
               }"""))


def _keep(path: Path) -> None:
    for extra in (os.environ.get("TONGBAN_ARTIFACTS"), str(SHOTS)):
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(extra) / path.name)


@asynccontextmanager
async def diagnosed(folder: Path, *clerks: Clerk, label: str = "failed"
                    ) -> AsyncIterator[None]:
    """A failure inside gets what each console holds as notes, and screenshots
    ({label}-*.png) beside the others."""
    try:
        yield
    except Exception as exc:
        for clerk in clerks:
            exc.add_note(await clerk.dump())
            await clerk.shot(folder, label)
        raise


async def open_console(stack: AsyncExitStack, browser: Any, url: str, name: str) -> Clerk:
    """The console at url in a browser context of its own (its own sessionStorage, as a
    second machine would have), once its socket is open."""
    context = await browser.new_context(viewport={"width": 1440, "height": 960},
                                        locale="zh-CN", permissions=["camera", "microphone"])
    stack.push_async_callback(context.close)
    context.set_default_timeout(WAIT_MS)
    page = await context.new_page()
    clerk = Clerk(page, name)
    await page.goto(url)
    await clerk.state("#conn-state", "open")
    return clerk


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A one-colour PNG, written by hand (no imaging library in the dev extra)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    row = b"\x00" + bytes(rgb) * width
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b""))
