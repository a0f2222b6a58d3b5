"""The memory watch (slope fit, warn, critical load shedding with real viewers,
leak suspicion over an injected hour) and systemd notification over a real socket."""

import asyncio
import logging
import random
import socket

import aiohttp
import pytest

from rpistream.config import LimitsConfig, MonitorConfig, parse_config
from rpistream.monitor import systemd as systemd_module
from rpistream.monitor.holdings import MiB
from rpistream.monitor.memory import MemoryWatch, fit_slope, mb_per_hour
from rpistream.monitor.systemd import SystemdNotifier, notify_address, watchdog_interval
from rpistream.webrtc.sessions import SessionRegistry

from serving import base_url, serving
from waiting import until
from whep_client import WhepViewer


# ── slope ────────────────────────────────────────────────────────────────────


def test_slope_of_a_flat_series_is_zero():
    samples = [(t * 30.0, 100 * MiB) for t in range(121)]
    assert mb_per_hour(fit_slope(samples)) == 0


def test_slope_of_a_growing_series():
    # 10 MB/h = 10 MiB per 3600 s, with allocator-like noise of +-1 MB.
    rng = random.Random(1)
    samples = [(1e9 + t * 30.0, 100 * MiB + t * 30 * 10 * MiB / 3600 + rng.uniform(-1, 1) * MiB)
               for t in range(121)]
    assert mb_per_hour(fit_slope(samples)) == pytest.approx(10, abs=0.5)


def test_slope_needs_two_distinct_times():
    assert fit_slope([]) is None
    assert fit_slope([(5.0, 1)]) is None
    assert fit_slope([(5.0, 1), (5.0, 2)]) is None
    assert mb_per_hour(fit_slope([(0.0, 0), (3600.0, MiB)])) == pytest.approx(1)


def test_monitor_defaults():
    assert parse_config({}).monitor == MonitorConfig(
        sample_interval=30.0, warn_rss_mb=320, critical_rss_mb=448, leak_slope_mb_per_h=2.0,
        debug_api=False)


# ── leak suspicion over an hour of injected samples ─────────────────────────


class Clock:
    def __init__(self, start=1_700_000_000.0):
        self.now = start

    def __call__(self):
        return self.now


def watch_with(series, **config):
    """A MemoryWatch fed `series(i)` (bytes) at sample i, 30 s apart."""
    clock = Clock()
    state = {"i": 0}
    watch = MemoryWatch(MonitorConfig(**config), cameras={},
                        sessions=SessionRegistry(ice_servers=(), limits=LimitsConfig()),
                        read_rss=lambda: series(state["i"]), clock=clock)

    def run(samples):
        for _ in range(samples):
            watch.sample()
            state["i"] += 1
            clock.now += watch.interval
    return watch, run


def leak_lines(caplog):
    return [r.getMessage() for r in caplog.records if "suspected memory leak" in r.getMessage()]


async def test_leak_is_suspected_once_after_an_hour_of_growth(caplog):
    caplog.set_level(logging.INFO, "rpistream.memory")
    # 6 MB/h (0.05 MB per 30 s sample), threshold 2 MB/h.
    watch, run = watch_with(lambda i: 100 * MiB + i * MiB // 20)
    run(120)  # 119 intervals: the window does not span the hour yet
    assert not leak_lines(caplog) and not watch.leak_suspected
    assert watch.slope() == pytest.approx(6, rel=0.01)
    run(1)
    (line,) = leak_lines(caplog)
    assert watch.leak_suspected
    assert "RSS grew 6.0 MB/h over the last hour" in line and "leak_slope_mb_per_h is 2" in line
    run(240)  # logged once, not once per sample
    assert len(leak_lines(caplog)) == 1
    assert len(watch.samples) == 121  # the window stays bounded


async def test_no_leak_for_noise_a_step_or_slow_growth(caplog):
    caplog.set_level(logging.INFO, "rpistream.memory")
    rng = random.Random(2)
    cases = {
        "noise": lambda i: 100 * MiB + int(rng.uniform(-2, 2) * MiB),
        # 40 viewers joining at once: 80 MB in one step, flat before and after.
        "step": lambda i: 100 * MiB + (80 * MiB if i >= 150 else 0),
        "slow": lambda i: 100 * MiB + i * MiB // 240,  # 0.5 MB/h
    }
    for name, series in cases.items():
        watch, run = watch_with(series)
        run(400)  # over three hours
        assert not leak_lines(caplog), name
        assert watch.state == "ok"


# ── warn and critical with a real server and real viewers ───────────────────


class Rss:
    """The RSS reading, set by the test; `critical_while` makes it depend on
    how many viewers are still streaming."""

    def __init__(self, server):
        self.server = server
        self.value = 100 * MiB
        self.critical_while_more_than: int | None = None

    def __call__(self) -> int:
        if self.critical_while_more_than is not None:
            live = [s for s in self.server.sessions.sessions.values()
                    if s.viewer is not None and s.viewer.state != "closed"]
            return 9500 * MiB if len(live) > self.critical_while_more_than else 100 * MiB
        return self.value


# Thresholds far above the test process's own RSS (the whole suite runs in it,
# several hundred MB), which the watch reads until the test injects its own.
WATCH = {"warn_rss_mb": 8000, "critical_rss_mb": 9000}


async def test_warn_then_critical_sheds_the_slowest_viewer(caplog):
    caplog.set_level(logging.INFO)
    async with serving(monitor=WATCH) as server, \
            aiohttp.ClientSession() as http:
        clients = [WhepViewer(base_url(server)) for _ in range(2)]
        for client in clients:
            await client.connect(http)
        await asyncio.gather(*(client.wait_frames(10) for client in clients))
        fast_id, slow_id = [c.location.rsplit("/", 1)[1] for c in clients]
        fast = server.sessions.sessions[fast_id].viewer
        slow = server.sessions.sessions[slow_id].viewer
        slow._send = lambda packet: 0  # its socket is backed up from now on
        await until(lambda: slow.state != "streaming" and slow.skips_to_keyframe > 0,
                    lambda: f"the blocked viewer to fall behind and skip to a keyframe "
                            f"(state {slow.state}, skips {slow.skips_to_keyframe})")

        memory = server.memory
        rss = Rss(server)
        memory.read_rss, memory.shed_interval = rss, 0.1
        rss.value = 8010 * MiB  # over warn
        memory.sample()
        assert memory.state == "warn"
        (warning,) = [r.getMessage() for r in caplog.records if "memory warn" in r.getMessage()]
        assert "RSS 8010 MB is at or above warn_rss_mb (8000 MB)" in warning
        assert "rings: cam0 4.0 MiB" in warning and "NACK histories" in warning
        assert "open peers: 2 (2 streaming)" in warning
        memory.sample()  # still over warn: no second warning
        assert sum("memory warn" in r.getMessage() for r in caplog.records) == 1

        fast_skips = fast.skips_to_keyframe
        rss.critical_while_more_than = 1  # critical until one viewer has gone
        memory.sample()
        assert memory.state == "critical"
        # Everyone dropped their queue and waits for a keyframe; the slowest went.
        assert fast.skips_to_keyframe == fast_skips + 1 and fast.queue_depth == 0
        assert slow.state == "closed"
        await until(lambda: server.sessions.count() == 1,
                    lambda: f"the shed viewer's session to close ({server.sessions.count()} "
                            f"sessions left)")
        assert fast_id in server.sessions.sessions
        assert server.sessions.disconnects == {"memory critical": 1}
        await until(lambda: memory.state == "ok",
                    lambda: f"memory state ok after shedding (still {memory.state})")
        assert memory.viewers_shed == 1
        log = "\n".join(r.getMessage() for r in caplog.records)
        assert "memory critical: RSS 9500 MB is at or above critical_rss_mb (9000 MB)" in log
        assert "dropped" in log and "all skipping to the next keyframe" in log
        assert f"disconnected viewer {slow_id} of camera cam0, the slowest" in log
        assert "memory critical resolved: RSS 100 MB is under warn_rss_mb (8000 MB) " \
               "after disconnecting 1 viewers" in log
        # The viewer that kept up resumes on the next keyframe.
        sent = fast.frames_sent
        await until(lambda: fast.frames_sent > sent + 5 and fast.state == "streaming",
                    lambda: f"the remaining viewer to stream again (state {fast.state}, "
                            f"{fast.frames_sent - sent} frames since the shedding)")
        for client in clients:
            await client.close()


async def test_no_new_viewer_while_memory_is_critical():
    async with serving(monitor=WATCH) as server, aiohttp.ClientSession() as http:
        url = f"{base_url(server)}/cameras/cam0/whep"
        headers = {"Content-Type": "application/sdp"}
        server.memory.state = "critical"
        async with http.post(url, data="v=0\r\n", headers=headers) as response:
            assert response.status == 503 and response.headers["Retry-After"] == "10"
            assert "short of memory and shedding viewers" in await response.text()
        server.memory.state = "ok"
        async with http.post(url, data="v=0\r\n", headers=headers) as response:
            assert response.status == 400  # on to the offer, which is no offer


async def test_critical_with_no_viewer_left_says_so(caplog):
    caplog.set_level(logging.INFO, "rpistream.memory")
    watch, run = watch_with(lambda i: 600 * MiB)
    run(1)
    assert watch.state == "critical"
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert "dropped 0 queued frames of 0 viewers" in log
    assert "memory still critical with no viewer left to disconnect: RSS 600 MB" in log
    records = len(caplog.records)
    run(10)  # still critical, nobody to shed: nothing more to say
    assert len(caplog.records) == records and watch.state == "critical"


# ── systemd ──────────────────────────────────────────────────────────────────


def test_notify_socket_addresses():
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@/org/freedesktop/systemd1/notify") == \
        b"\0/org/freedesktop/systemd1/notify"
    assert notify_address(None) is None and notify_address("") is None
    assert watchdog_interval({"WATCHDOG_USEC": "20000000"}) == 10.0
    assert watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None


async def receive(sock, until_done, timeout=5.0):
    loop = asyncio.get_running_loop()
    messages = []

    async def gather():
        while not until_done(messages):
            messages.append((await loop.sock_recv(sock, 4096)).decode())
    await asyncio.wait_for(gather(), timeout)
    return messages


async def test_systemd_ready_watchdog_status_stopping(tmp_path, monkeypatch):
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        monkeypatch.setenv("WATCHDOG_USEC", "100000")  # a ping every 50 ms
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        monkeypatch.setattr(systemd_module, "STATUS_INTERVAL", 0.1)
        async with serving() as server:
            messages = await receive(sock, lambda m: sum(x == "WATCHDOG=1" for x in m) >= 3
                                     and sum(x.startswith("STATUS=") for x in m) >= 2)
            assert server.notifier.enabled
        (ready,) = [m for m in messages if m.startswith("READY=1")]
        assert ready == "READY=1\nSTATUS=0 viewers of 1 cameras, RSS " + ready.split("RSS ")[1]
        assert ready.endswith("MB (ok)")
        assert messages[0] == ready  # nothing before it: READY=1 once serving
        stopping = await receive(sock, lambda m: any("STOPPING=1" in x for x in m))
        assert stopping[-1] == "STOPPING=1\nSTATUS=shutting down"


async def test_systemd_abstract_socket_and_no_socket():
    name = f"rpistream-test-{random.randrange(1 << 30)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.setblocking(False)
        notifier = SystemdNotifier(lambda: "fine", environ={"NOTIFY_SOCKET": "@" + name})
        notifier.start()
        assert await receive(sock, lambda m: m) == ["READY=1\nSTATUS=fine"]
        notifier.stopping()
        assert await receive(sock, lambda m: m) == ["STOPPING=1\nSTATUS=shutting down"]
    quiet = SystemdNotifier(lambda: "fine", environ={"WATCHDOG_USEC": "1000"})
    quiet.start()
    assert not quiet.enabled and quiet.watchdog_interval is None and not quiet.send("READY=1")
    quiet.stopping()
