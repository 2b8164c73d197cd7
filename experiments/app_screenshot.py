"""Screenshot of the editor page with a headless Chromium, once the page has finished its first edit.

    python app.py &                                   # the editor, on http://127.0.0.1:7860
    python experiments/app_screenshot.py http://127.0.0.1:7860/ docs/editor.png

Chromium runs headless with networking, sync and updates off and a fresh profile; the page is driven over the
DevTools protocol (aiohttp's websocket client) and captured once its status line says the edit was generated (a
plain ``--screenshot`` fires on page load, before the server has answered).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]
DONE = "generated in"  # the page's status line once the first edit is shown


async def capture(ws_url: str, url: str, out: Path, width: int, height: int, timeout: float) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
        ids = iter(range(1, 10**6))

        async def call(method: str, **params):
            i = next(ids)
            await ws.send_str(json.dumps({"id": i, "method": method, "params": params}))
            async for msg in ws:
                data = json.loads(msg.data)
                if data.get("id") == i:
                    return data.get("result", {})
            raise RuntimeError("DevTools connection closed")

        await call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        await call("Page.enable")
        await call("Page.navigate", url=url)
        t0 = time.time()
        while time.time() - t0 < timeout:
            r = await call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''")
            text = r.get("result", {}).get("value", "")
            if DONE in text and "processing" not in text:
                break
            await asyncio.sleep(1.0)
        else:
            raise SystemExit(f"the page did not finish its first edit within {timeout:.0f} s")
        await asyncio.sleep(1.0)  # let the images paint
        shot = await call("Page.captureScreenshot", format="png")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(shot["data"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("out", type=Path)
    ap.add_argument("--size", default="1280x1100")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    profile = tempfile.mkdtemp(prefix="asyrp-chromium-")
    proc = subprocess.Popen(
        [
            args.chromium,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--remote-debugging-port={port}",
            f"--window-size={width},{height}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as r:
                    pages = [p for p in json.load(r) if p.get("type") == "page"]
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise SystemExit("chromium did not start")
        asyncio.run(capture(pages[0]["webSocketDebuggerUrl"], args.url, args.out, width, height, args.timeout))
        print(f"wrote {args.out}")
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
