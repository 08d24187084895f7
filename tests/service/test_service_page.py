"""The browser page at ``/`` in headless Chromium: type a query, press Enter, find the training text.

The screenshot goes to the test's temporary folder, or to $ATTRIBUTOR_SCREENSHOTS if set.
Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
JSON messages separated by NUL on file descriptors 3 and 4), so the test types with real
key events and needs no extra Python package. Chromium missing: the test skips, unless
ATTRIBUTOR_REQUIRE_CHROMIUM=1 (CI installs it with ``make sysdeps``).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.environ.get("ATTRIBUTOR_REQUIRE_CHROMIUM") == "1":
        pytest.fail("ATTRIBUTOR_REQUIRE_CHROMIUM=1 but no chromium / chromium-browser / google-chrome on PATH")
    pytest.skip("no headless Chromium on PATH (apt-get install -y chromium)")


class Browser:
    """Headless Chromium with one tab, driven over the DevTools protocol on a pipe."""

    def __init__(self, binary: str):
        self.profile = tempfile.TemporaryDirectory()
        to_child, self._to_browser = os.pipe()
        self._from_browser, from_child = os.pipe()
        # the browser reads fd 3 and writes fd 4: a python trampoline moves the child's ends there (from fds >= 10, no clash)
        inner = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_child, from_child)]
        for fd in (to_child, from_child):
            os.close(fd)
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run", "--disable-dev-shm-usage",
                "--remote-debugging-pipe", f"--user-data-dir={self.profile.name}", "--window-size=1200,900", "about:blank"]
        trampoline = "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); os.execv(sys.argv[3], sys.argv[3:])"
        self.process = subprocess.Popen([sys.executable, "-c", trampoline, *map(str, inner), *args], pass_fds=inner,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in inner:
            os.close(fd)
        self._buffer, self._next = b"", 0
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.page("Emulation.setDeviceMetricsOverride", width=1200, height=900, deviceScaleFactor=1, mobile=False)

    def send(self, method: str, session: str | None = None, timeout: float = 30, **params: Any) -> dict[str, Any]:
        self._next += 1
        message = {"id": self._next, "method": method, "params": params} | ({"sessionId": session} if session else {})
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buffer:
                if not select.select([self._from_browser], [], [], max(0.0, deadline - time.monotonic()))[0]:
                    raise TimeoutError(f"chromium did not answer {method} within {timeout} s")
                chunk = os.read(self._from_browser, 1 << 16)
                if not chunk:
                    raise EOFError(f"chromium closed the pipe (exit {self.process.poll()})")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next:  # events (no id) are skipped
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        return self.send(method, session=self.session, **params)

    def evaluate(self, expression: str) -> Any:
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout} s: {expression}")
            time.sleep(0.05)
        return value

    def type_into(self, selector: str, text: str) -> None:
        """Focus ``selector``, clear it, type ``text`` (input events as from a keyboard)."""
        self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.focus(); e.select(); return true; }})()")
        self.page("Input.insertText", text=text)

    def press_enter(self) -> None:
        for kind in ("keyDown", "keyUp"):
            self.page("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13,
                      **({"text": "\r"} if kind == "keyDown" else {}))

    def screenshot(self, path: Path) -> np.ndarray:
        from PIL import Image

        path.write_bytes(base64.b64decode(self.page("Page.captureScreenshot", format="png")["data"]))
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (OSError, TimeoutError, EOFError, RuntimeError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_browser, self._from_browser):
            os.close(fd)
        self.profile.cleanup()


@pytest.fixture
def browser():
    driven = Browser(chromium())
    yield driven
    driven.close()


def test_page_asks_for_a_key_then_shows_the_ranked_training_text(server, keys, facts, browser, tmp_path):
    person = facts[0]["entity"]
    question = f"What is the job of {person}?"
    expected = httpx.post(f"{server.url}/v1/query", json={"text": question, "top_k": 10},
                          headers={"Authorization": f"Bearer {keys['read']}"}).json()["results"][0]["hits"]
    assert expected[0]["meta"]["person"] == person

    browser.page("Page.navigate", url=f"{server.url}/")
    browser.wait_for("document.readyState === 'complete' && !!document.getElementById('q')")
    browser.wait_for("document.getElementById('index-info').textContent.includes('unavailable')")  # no key yet

    browser.type_into("#q", question)
    browser.press_enter()
    browser.wait_for("document.body.dataset.state === 'error'")
    assert "API key" in browser.evaluate("document.getElementById('error').textContent")
    assert browser.evaluate("document.getElementById('key-box').open") is True  # the page opened the key field

    browser.type_into("#key", keys["read"])
    browser.type_into("#q", question)
    browser.press_enter()
    browser.wait_for("document.body.dataset.state === 'done'")
    shown = browser.evaluate("[...document.querySelectorAll('#hits li.hit')].map(li => "
                             "({id: li.dataset.id, text: li.querySelector('.text').textContent}))")
    assert [row["id"] for row in shown] == [hit["id"] for hit in expected]
    assert shown[0]["text"] == expected[0]["text"] and person in shown[0]["text"]
    assert browser.evaluate("document.getElementById('error').hidden") is True
    stages = browser.evaluate("[...document.querySelectorAll('#stages tr td:first-child')].map(td => td.textContent)")
    assert stages == ["embed", "gradient", "search", "refine", "total", "server (request)"]

    shot = Path(os.environ.get("ATTRIBUTOR_SCREENSHOTS", tmp_path)) / "service_page.png"
    pixels = browser.screenshot(shot).astype(np.int16)
    assert pixels.shape[:2] == (900, 1200)
    assert (pixels.min(axis=2) < 200).mean() > 0.02  # text and cards drawn, not a blank page
    blue = (pixels[..., 2] - pixels[..., 0] > 60).mean()  # the score bars and the button
    assert blue > 0.0005, blue


def test_page_is_self_contained(open_server):
    html = httpx.get(f"{open_server.url}/").text
    assert html.startswith("<!DOCTYPE html>") and "/static/app.js" in html and "http" not in html.replace("http-equiv", "")
    script = httpx.get(f"{open_server.url}/static/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in script.text  # server strings are shown with textContent only
    assert httpx.get(f"{open_server.url}/static/../keys.json").status_code == 404
