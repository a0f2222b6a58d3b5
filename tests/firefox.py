"""Debian's firefox-esr driven through Marionette (PyPI marionette-driver),
kept on this machine: a fresh profile whose preferences turn off every call
Firefox makes on its own (updates, telemetry, remote settings, captive
portal checks) and let WebRTC use loopback addresses.

No downloaded browser builds: Debian's package is the browser under test.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import socket
import subprocess
import time
from pathlib import Path

FIREFOX = Path("/usr/bin/firefox-esr")
START_TIMEOUT = 60.0  # seconds for Firefox to start and open its Marionette port

PREFS = {
    # WebRTC on loopback (ICE skips it by default) and with real addresses
    # in candidates (mDNS names instead would need multicast).
    "media.peerconnection.ice.loopback": True,
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    # Nothing leaves the machine: no updates, telemetry, remote settings,
    # safe browsing lists, captive-portal or connectivity probes, DNS prefetch.
    "app.update.enabled": False,
    "app.update.auto": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.server": "",
    "browser.ping-centre.telemetry": False,
    "services.settings.server": "http://127.0.0.1:9/",
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.provider.mozilla.updateURL": "",
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
    "network.http.speculative-parallel-limit": 0,
    "extensions.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.blocklist.enabled": False,
    "media.gmp-manager.url": "http://127.0.0.1:9/",  # no plugin downloads
    "media.gmp-gmpopenh264.autoupdate": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage": "about:blank",
    "browser.startup.page": 0,
    "browser.newtabpage.enabled": False,
    "startup.homepage_welcome_url": "about:blank",
    "browser.aboutwelcome.enabled": False,
    "trailhead.firstrun.didSeeAboutWelcome": True,
    "network.trr.mode": 5,  # no DNS over HTTPS
    # Autoplay of the muted <video> the page uses.
    "media.autoplay.default": 0,
}


def available() -> bool:
    return FIREFOX.exists() and importlib.util.find_spec("marionette_driver") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_profile(directory: Path, port: int, prefs: dict | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"user_pref({json.dumps(name)}, {json.dumps(value)});"
             for name, value in {**PREFS, "marionette.port": port, **(prefs or {})}.items()]
    (directory / "user.js").write_text("\n".join(lines) + "\n")


@contextlib.contextmanager
def firefox(profile: Path, executable: Path = FIREFOX, prefs: dict | None = None):
    """A headless Firefox with a fresh profile in `profile`, and a Marionette
    session on it; `executable` may be a wrapper that starts it elsewhere (a
    network namespace: Marionette then needs its port reachable, see
    `marionette_host`). Yields the marionette_driver client; Firefox is
    stopped on exit whatever happens."""
    from marionette_driver.marionette import Marionette

    port = _free_port()
    write_profile(profile, port, prefs)
    log = profile / "firefox.log"
    with open(log, "w") as out:
        process = subprocess.Popen([str(executable), "--headless", "--marionette", "--no-remote",
                                    "--profile", str(profile)], stdout=out,
                                   stderr=subprocess.STDOUT)
    client = None
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert process.poll() is None, f"firefox ended:\n{log.read_text()[-3000:]}"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert time.monotonic() < deadline, f"no Marionette port:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        client = Marionette(host="127.0.0.1", port=port)
        client.start_session()
        yield client
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.delete_session()
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
