"""Screenshots of a running ``videoccam demo`` in headless Chromium (standard library only).

Two ways, both used by tests/test_demo.py:

* :func:`plain_screenshot`: the page as it loads, with Chromium's own ``--screenshot`` flag.
* :func:`answered_screenshot`: drives the page over the DevTools protocol on a pipe
  (``--remote-debugging-pipe``: NUL-terminated JSON messages on file descriptors 3 and 4, so no
  websocket client is needed): clicks the first example, sends its question, waits until the chat
  shows the answer, then captures the page. This is how docs/images/demo.png is made::

      videoccam demo --port 7860 &
      python tools/demo_screenshot.py http://127.0.0.1:7860/ docs/images/demo.png
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WINDOW = (1280, 900)
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
_BASE_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               "--disable-extensions", f"--window-size={WINDOW[0]},{WINDOW[1]}"]


def find_browser() -> str | None:
    """The path of a Chromium-like browser on PATH, or None."""
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def plain_screenshot(url: str, out: str | Path, browser: str | None = None, timeout: float = 120) -> Path:
    """The page at ``url`` after 8 s of virtual time, as a PNG at ``out``.

    Raises:
        RuntimeError: no browser, or it wrote no file (its stderr's tail in the message).
    """
    browser = browser or find_browser()
    if browser is None:
        raise RuntimeError(f"no browser: none of {', '.join(BROWSERS)} is on PATH")
    out = Path(out)
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([browser, *_BASE_FLAGS, f"--user-data-dir={profile}", f"--screenshot={out}",
                               "--virtual-time-budget=8000", url], capture_output=True, text=True, timeout=timeout,
                              check=False)
    if not out.is_file():
        raise RuntimeError(f"{browser} wrote no screenshot (exit {done.returncode}): {done.stderr[-500:]}")
    return out


class DevTools:
    """A DevTools-protocol connection to a headless Chromium over ``--remote-debugging-pipe``."""

    def __init__(self, browser: str | None = None, stderr: int | None = subprocess.DEVNULL) -> None:
        browser = browser or find_browser()
        if browser is None:
            raise RuntimeError(f"no browser: none of {', '.join(BROWSERS)} is on PATH")
        self._profile = tempfile.TemporaryDirectory()
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        # the browser reads commands on fd 3 and writes replies on fd 4; os.pipe's own fds are not
        # inheritable (closed at exec), the dup2 copies are
        def child_fds() -> None:
            high_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)  # out of the way of 3 and 4 first
            high_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.process = subprocess.Popen(
            [browser, *_BASE_FLAGS, f"--user-data-dir={self._profile.name}", "--remote-debugging-pipe",
             "about:blank"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
            preexec_fn=child_fds, close_fds=False)  # runs before close_fds would close 3 and 4
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.session: str | None = None

    def call(self, method: str, params: dict | None = None, timeout: float = 30) -> dict:
        """Send one command (to the attached page when there is one) and return its result."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session is not None and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:  # events and other replies are skipped
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _read(self, deadline: float) -> dict:
        import select

        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("the browser did not answer in time")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("the browser closed the pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def open(self, url: str) -> None:
        """Attach to the page and load ``url``."""
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]
        self.call("Page.enable")
        self.call("Page.navigate", {"url": url})

    def evaluate(self, expression: str) -> object:
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 60, every: float = 0.25) -> object:
        """Poll ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(every)
        raise TimeoutError(f"still false after {timeout} s: {expression}")

    def screenshot(self, out: str | Path, full_page: bool = True) -> Path:
        """The page as a PNG at ``out``: ``WINDOW`` wide, and as tall as the page with ``full_page``."""
        height = WINDOW[1]
        if full_page:
            height = max(height, int(self.evaluate("document.documentElement.scrollHeight") or 0))
        self.call("Emulation.setDeviceMetricsOverride", {"width": WINDOW[0], "height": height,
                                                         "deviceScaleFactor": 1, "mobile": False})
        time.sleep(0.5)  # a relayout at the new height
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        out = Path(out)
        out.write_bytes(base64.b64decode(data))
        return out

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.call("Browser.close", timeout=5)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._profile.cleanup()


# the page's chat text (gradio renders the chat box with data-testid attributes)
_CHAT_TEXT = "(document.querySelector('[data-testid=\"bot\"]') || {}).innerText || ''"


def answered_screenshot(url: str, out: str | Path, expect: str, browser: str | None = None,
                        timeout: float = 90) -> str:
    """Click the first example, press Send, wait until an answer containing ``expect`` shows, and
    capture the page at ``out``; returns the answer's text as the page shows it."""
    tools = DevTools(browser)
    try:
        tools.open(url)
        first_example = "document.querySelector('[data-testid=\"dataset-cell-0-1\"]')"  # gradio's examples table
        tools.wait_for(f"!!{first_example}", timeout)
        tools.evaluate(f"{first_example}.click()")
        tools.wait_for("[...document.querySelectorAll('textarea')].some(t => t.value.length > 0) && "
                       "!!document.querySelector('video')", timeout)
        tools.evaluate("[...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Send').click()")
        answer = tools.wait_for(f"(() => {{ const t = {_CHAT_TEXT}; return t.includes({json.dumps(expect)}) "
                                "&& t; })()", timeout)
        time.sleep(1.0)  # the timings panel is written with the last yield
        tools.screenshot(out)
        return str(answer)
    finally:
        tools.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("out")
    parser.add_argument("--expect", default="green", help="text the answer must contain (default: green)")
    args = parser.parse_args(argv)
    answer = answered_screenshot(args.url, args.out, args.expect)
    sys.stdout.write(f"{args.out}: answered {answer!r}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
