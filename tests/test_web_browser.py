"""``tally web`` in a real browser: Debian's headless Chromium loads the page, the page
connects its websocket, a ``tally`` app process starts for the visitor, and its home
screen's balance ("100.00 EUR spendable") reaches the browser's terminal.

textual-serve's page draws the terminal with xterm.js on a ``<canvas>``, so the text is
not in the DOM (``--dump-dom`` shows only empty canvases). The test drives Chromium over
the DevTools protocol instead: it finds the page's xterm ``Terminal`` (textual-serve keeps
it in a closure; the class is reached through ``window.onload``'s scopes and its one
instance through ``Runtime.queryObjects``), polls the terminal's visible rows until the
balance is there, and saves a screenshot next to the test's temp files.

Skipped when no Chromium is installed (``./dev test`` installs Debian's as root).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.clikit import api_fund, api_network, api_wallets, command, tally_env
from tests.test_sync_client import free_port

pytestmark = pytest.mark.slow

BROWSERS = ("chromium", "chromium-headless-shell", "chromium-browser", "google-chrome")
DEADLINE_S = 20.0  # the whole browser part; it takes a few seconds when all is well
BALANCE = "100.00 EUR spendable"

# The visible rows of the page's terminal, whether it is shown (textual-serve's intro
# gone) and whether the session ended (the app process exited); null while it has none.
READ_SCREEN = """(() => {
  const t = window.__tallyTerminal;
  if (!t) return null;
  const b = t.buffer.active, rows = [];
  for (let y = 0; y < t.rows; y++) {
    const line = b.getLine(b.viewportY + y);
    rows.push(line ? line.translateToString(true) : "");
  }
  const body = document.body.classList;
  return {rows, shown: body.contains("-first-byte"), closed: body.contains("-closed")};
})()"""


def chromium() -> str | None:
    """The path of a Chromium on PATH, if any."""
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    return None


def stop(proc: subprocess.Popen[Any]) -> None:
    """End a process started in its own session, and whatever it started."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # children left behind (renderers, the app)


class DevTools:
    """A minimal Chrome DevTools Protocol client on one page target."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.next_id = 0

    def call(self, method: str, timeout_s: float = 10, **params: Any) -> dict[str, Any]:
        """Send one command; its result (events in between are dropped)."""
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        end = time.monotonic() + timeout_s
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.01, end - time.monotonic())))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg["result"]

    def props(self, object_id: str) -> dict[str, Any]:
        """``Runtime.getProperties`` of an object, own and internal."""
        return self.call("Runtime.getProperties", objectId=object_id, ownProperties=True)

    def on(self, object_id: str, js: str) -> Any:
        """The value of ``js`` (a function) called with ``this`` the given object."""
        r = self.call("Runtime.callFunctionOn", objectId=object_id, functionDeclaration=js,
                      returnByValue=True)
        return r["result"].get("value")

    def evaluate(self, js: str) -> Any:
        """The value of an expression in the page."""
        return self.call("Runtime.evaluate", expression=js, returnByValue=True)[
            "result"].get("value")

    def find_terminal(self) -> bool:
        """Make the page's xterm ``Terminal`` ``window.__tallyTerminal``; whether it is.

        textual.js creates its client class's one instance in ``window.onload`` and keeps
        it nowhere global; the class is a variable of that function's closure, the one
        whose prototype has ``connect`` and ``sendSize``, and the instance's ``terminal``
        is the xterm ``Terminal``."""
        if self.evaluate("!!window.__tallyTerminal"):
            return True
        onload = self.call("Runtime.evaluate", expression="window.onload")["result"]
        if "objectId" not in onload:
            return False
        internal = self.props(onload["objectId"]).get("internalProperties", [])
        scopes = next((p["value"]["objectId"] for p in internal if p["name"] == "[[Scopes]]"),
                      None)
        if scopes is None:
            return False
        for scope in self.props(scopes)["result"]:
            if "objectId" not in scope["value"] or scope["value"].get("description") == "Global":
                continue
            for var in self.props(scope["value"]["objectId"])["result"]:
                value = var.get("value", {})
                if value.get("type") != "function" or not self.on(
                        value["objectId"], "function () { const p = this.prototype;"
                        " return !!(p && p.connect && p.sendSize); }"):
                    continue
                proto = self.call("Runtime.callFunctionOn", objectId=value["objectId"],
                                  functionDeclaration="function () { return this.prototype; }"
                                  )["result"]["objectId"]
                found = self.call("Runtime.queryObjects", prototypeObjectId=proto)["objects"]
                return bool(self.on(found["objectId"], "function () { if (this.length)"
                                    " window.__tallyTerminal = this[0].terminal;"
                                    " return !!window.__tallyTerminal; }"))
        return False


def test_tally_web_shows_the_balance_in_chromium(tmp_path: Path) -> None:
    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium on PATH: `apt-get install chromium` (Debian; `./dev test` "
                    "does it when run as root)")
    api_network(tmp_path, "web")
    (alice,) = api_wallets(tmp_path / "g", tmp_path / "alice")
    api_fund(tmp_path / "issuer", alice, 10_000)

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    web_log = (tmp_path / "web.log").open("w")
    web = subprocess.Popen(command(alice.path, "web", "--listen", f"127.0.0.1:{port}"),
                           env=tally_env(), stdout=web_log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    profile = tmp_path / "chromium-profile"
    chrome_log = (tmp_path / "chromium.log").open("w")
    chrome: subprocess.Popen[bytes] | None = None
    screen: dict[str, Any] | None = None
    try:
        end = time.monotonic() + DEADLINE_S
        while True:  # the server is up
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    assert b"textual.js" in r.read()
                break
            except OSError:
                assert web.poll() is None, (tmp_path / "web.log").read_text()
                assert time.monotonic() < end, "tally web never answered"
                time.sleep(0.05)

        chrome = subprocess.Popen(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
             f"--user-data-dir={profile}", "--window-size=1200,800",
             # Nothing but this machine: the page also asks Google for a font.
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
             "about:blank"],
            stdout=chrome_log, stderr=subprocess.STDOUT, start_new_session=True)
        active = profile / "DevToolsActivePort"
        while not (active.exists() and active.read_text().strip()):
            assert chrome.poll() is None, (tmp_path / "chromium.log").read_text()[-2000:]
            assert time.monotonic() < end, "Chromium never opened its DevTools port"
            time.sleep(0.05)
        devtools_port = int(active.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{devtools_port}/json/list",
                                    timeout=5) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")

        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
            cdp = DevTools(ws)
            cdp.call("Page.navigate", url=url)
            while time.monotonic() < end:
                if cdp.find_terminal():
                    screen = cdp.evaluate(READ_SCREEN)
                    if screen and (screen["closed"] or (
                            screen["shown"] and any(BALANCE in r for r in screen["rows"]))):
                        break
                time.sleep(0.1)
            shot = cdp.call("Page.captureScreenshot", format="png")["data"]
            (tmp_path / "tally-web.png").write_bytes(base64.b64decode(shot))
    finally:
        if chrome is not None:
            stop(chrome)
        stop(web)
        web_log.close()
        chrome_log.close()

    said = "\n".join((tmp_path / "web.log").read_text().splitlines()[-30:])
    assert screen is not None, f"no xterm terminal found in the page (textual.js changed?)\n{said}"
    text = "\n".join(r.rstrip() for r in screen["rows"]).strip("\n")
    assert not screen["closed"], f"the app's session ended; tally web said:\n{said}"
    assert BALANCE in text, f"the browser's terminal shows:\n{text}\ntally web said:\n{said}"
    assert screen["shown"], "the terminal is still hidden behind textual-serve's intro"
