"""WebKitGTK, Safari's engine as Debian ships it: its MiniBrowser driven
through WebKitWebDriver (webkit2gtk-driver, W3C WebDriver over HTTP on
loopback) on a virtual X display (Xvfb). A small blocking client: run it
in a worker thread beside an async server."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

DRIVER = "WebKitWebDriver"
MINIBROWSER = Path("/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser")
# WebKitSettings the browser starts with: WebRTC is off by default in WebKitGTK.
SETTINGS = ["--enable-webrtc=true", "--enable-media-stream=true"]
START_TIMEOUT = 30.0
REQUEST_TIMEOUT = 60.0


def available() -> bool:
    return (shutil.which(DRIVER) is not None and shutil.which("Xvfb") is not None
            and MINIBROWSER.exists())


class Session:
    """One WebDriver session (W3C WebDriver §6): navigate and run scripts."""

    def __init__(self, base: str):
        self.base = base

    def _call(self, method: str, path: str, body: dict | None = None):
        request = urllib.request.Request(
            self.base + path, method=method, headers={"Content-Type": "application/json"},
            data=None if body is None else json.dumps(body).encode())
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"WebDriver {method} {path}: {error.read().decode()}") from None

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):  # the browser may be gone already
            self._call("DELETE", "")

    def navigate(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def execute(self, script: str, *args):
        return self._call("POST", "/execute/sync", {"script": script, "args": list(args)})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def webkit(directory: Path):
    """Xvfb, WebKitWebDriver and a MiniBrowser session with WebRTC asked for;
    everything stopped on exit. Logs go to `directory`."""
    with contextlib.ExitStack() as stack:
        xvfb = subprocess.Popen(["Xvfb", "-displayfd", "1", "-nolisten", "tcp",
                                 "-screen", "0", "1280x800x24"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        stack.callback(_stop, xvfb)
        display = xvfb.stdout.readline().strip()
        assert display, "Xvfb did not start"
        port = _free_port()
        log = stack.enter_context(open(directory / "webkit.log", "w"))
        driver = subprocess.Popen([DRIVER, f"--port={port}"], stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "DISPLAY": f":{display}"})
        stack.callback(_stop, driver)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert driver.poll() is None and time.monotonic() < deadline, "no WebKitWebDriver"
            time.sleep(0.1)
        created = Session(base)._call("POST", "/session", {"capabilities": {"alwaysMatch": {
            "browserName": "MiniBrowser",
            "webkitgtk:browserOptions": {"binary": str(MINIBROWSER),
                                         "args": ["--automation", *SETTINGS]}}}})
        session = Session(f"{base}/session/{created['sessionId']}")
        stack.callback(session.close)
        yield session


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
