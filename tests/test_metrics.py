"""/metrics (Prometheus text format), /api/stats (the viewer page's JSON) and
/api/debug/tracemalloc, against a real server with a real viewer."""

import asyncio
import contextlib
import gc
import tracemalloc
import weakref

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from serving import base_url, serving
from waiting import until
from whep_client import WhepViewer

TOKEN = "0123456789abcdef-test"


class RingNode:
    """One gc-tracked object (slots: no instance dict to count besides it)."""

    __slots__ = ("next", "__weakref__")


PLANTED = 1000


def plant_garbage_cycle() -> weakref.ref:
    """PLANTED objects in a reference ring nothing else refers to: garbage
    only a cycle collection frees, and it counts exactly PLANTED for them."""
    nodes = [RingNode() for _ in range(PLANTED)]
    for node, following in zip(nodes, nodes[1:] + nodes[:1]):
        node.next = following
    return weakref.ref(nodes[0])


@contextlib.contextmanager
def only_explicit_collections():
    """Automatic collection off (so only the server's gc.collect() frees cycles
    meanwhile); yields the (generation, objects found) of every collection run."""
    runs = []

    def record(phase, info):
        if phase == "stop":
            runs.append((info["generation"], info["collected"] + info["uncollectable"]))

    gc.callbacks.append(record)
    gc.disable()
    try:
        yield runs
    finally:
        gc.enable()
        gc.callbacks.remove(record)


async def scrape(http, server) -> dict:
    """{(sample name, frozenset of labels): value}"""
    async with http.get(base_url(server) + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await response.text()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(metrics, name, **labels):
    return metrics[(name, frozenset(labels.items()))]


async def stats(http, server) -> dict:
    async with http.get(base_url(server) + "/api/stats") as response:
        assert response.status == 200
        return await response.json()


async def test_metrics_and_stats_while_a_viewer_watches():
    async with serving(monitor={"warn_rss_mb": 8000, "critical_rss_mb": 9000}) as server, \
            aiohttp.ClientSession() as http:
        client = WhepViewer(base_url(server))
        await client.connect(http)
        await client.wait_frames(30)
        (session,) = server.sessions.sessions.values()
        await until(lambda: session.viewer.rtt is not None,
                    "an RTT (an RTCP receiver report answering a sender report)")
        # aiortc offers no FEC codec (no RED/ULPFEC/FlexFEC): FEC "auto" picks none.
        assert session.fec_scheme is None
        first = await stats(http, server)
        await asyncio.sleep(1.1)  # bitrates are measured over at least a second
        doc = await stats(http, server)
        m = await scrape(http, server)

        # /metrics
        assert 30 * 2**20 < value(m, "process_resident_memory_bytes") < 2**31
        assert value(m, "process_cpu_seconds_total") > 0
        assert value(m, "process_open_fds") > 5
        assert value(m, "rpistream_asyncio_tasks") > 0
        assert value(m, "rpistream_memory_state", state="ok") == 1
        assert value(m, "rpistream_memory_state", state="critical") == 0
        assert value(m, "rpistream_memory_threshold_bytes", level="warn") == 8000 * 2**20
        assert value(m, "rpistream_peers") == 1
        frames = value(m, "rpistream_camera_frames_total", camera="cam0")
        assert frames >= 30
        assert 1 <= value(m, "rpistream_camera_keyframes_total", camera="cam0") <= frames
        assert value(m, "rpistream_camera_bytes_total", camera="cam0") > 10_000
        assert value(m, "rpistream_camera_ring_dropped_total", camera="cam0") == 0
        assert value(m, "rpistream_camera_ring_capacity_bytes", camera="cam0") == 4 * 2**20
        assert 0 < value(m, "rpistream_camera_batches_held_bytes", camera="cam0") < 4 * 2**20
        assert value(m, "rpistream_camera_viewers", camera="cam0") == 1
        assert value(m, "rpistream_viewers", camera="cam0", state="streaming") == 1
        packets = value(m, "rpistream_viewer_packets_sent_total", camera="cam0")
        assert packets >= 30
        assert value(m, "rpistream_viewer_bytes_sent_total", camera="cam0") > 10_000
        assert value(m, "rpistream_viewer_frames_sent_total", camera="cam0") >= 30
        # Nothing to repair or skip: loopback loses no datagram (the client reads
        # its socket on this loop long before 200 kB of buffer fill at 500 kbit/s),
        # so aiortc sends no NACK; nothing negotiated FEC (above); the socket never
        # backs up, so the viewer's 3-frame queue never overflows.
        for name in ("nacks_received", "packets_retransmitted", "fec_packets_sent",
                     "frames_skipped"):
            assert value(m, f"rpistream_viewer_{name}_total", camera="cam0") == 0, name
        rtt = {stat: value(m, "rpistream_viewer_rtt_seconds", camera="cam0", stat=stat)
               for stat in ("min", "avg", "max")}
        assert 0 <= rtt["min"] <= rtt["avg"] <= rtt["max"] < 0.5
        assert value(m, "rpistream_viewer_loss_ratio", camera="cam0", stat="max") < 0.5

        # /api/stats: the shape the viewer page's charts read
        assert set(doc) == {"time", "process", "memory", "cameras", "viewers", "forwards",
                            "disconnects", "totals"}
        assert doc["forwards"] == []
        assert set(doc["process"]) == {"rss_mb", "rss_slope_mb_per_h", "memory_state",
                                       "cpu_percent", "fds", "tasks", "uptime_s"}
        process = doc["process"]
        assert 30 < process["rss_mb"] < 2048 and process["memory_state"] == "ok"
        assert process["rss_slope_mb_per_h"] is None  # one sample so far (every 30 s)
        assert process["cpu_percent"] > 0 and process["fds"] > 5 and process["tasks"] > 0
        assert process["uptime_s"] > 0 and doc["time"] > first["time"]
        (t, rss), = doc["memory"]["samples"]
        assert abs(t - doc["time"]) < 60 and 30 < rss < 2048
        cam = doc["cameras"]["cam0"]
        assert set(cam) == {"frames", "keyframes", "bitrate_bps", "viewers", "ring", "fec",
                            "error", "health", "recording"}
        assert cam["viewers"] == 1 and cam["error"] is None and cam["frames"] >= 30
        assert cam["health"]["state"] == "live" and cam["health"]["reason"] is None
        assert cam["health"]["restarts"] == cam["health"]["stalls"] == 0
        assert 100_000 < cam["bitrate_bps"] < 2_000_000  # the camera's 500 kbit/s
        assert cam["ring"]["capacity"] == 4 * 2**20 and cam["ring"]["dropped"] == 0
        (viewer,) = doc["viewers"]
        assert client.location.endswith("/" + viewer["session"])
        required = {"session", "camera", "state", "codec", "fec", "queue_depth", "bitrate_bps",
                    "fraction_lost", "loss", "rtt_ms", "frames_skipped", "connected_since",
                    "packets_sent", "nacks_received", "history_bytes"}
        assert required <= set(viewer)
        assert (viewer["camera"], viewer["state"], viewer["codec"]) == ("cam0", "streaming",
                                                                        "h264")
        assert 100_000 < viewer["bitrate_bps"] < 2_000_000
        assert doc["totals"] == {"viewers": 1, "bitrate_bps": viewer["bitrate_bps"]}
        assert doc["disconnects"] == {}

        # A viewer that leaves takes nothing from the counters.
        assert server.sessions.cycles.collections == 0
        with only_explicit_collections() as collections:
            planted = plant_garbage_cycle()
            assert await client.hang_up(http) == 200
            await until(lambda: server.sessions.count() == 0, "the hung-up session to close")
            after = await scrape(http, server)
            assert value(after, "rpistream_viewer_packets_sent_total", camera="cam0") >= packets
            assert value(after, "rpistream_viewer_disconnects_total", reason="hung up") == 1
            await until(lambda: server.sessions.cycles.collections == 1,
                        "the collection after the session closed", timeout=10)
            after = await scrape(http, server)
            # Checked before automatic collection is back on and could free it.
            planted_freed = planted() is None
        assert value(after, "rpistream_cycle_collections_total") == 1
        # The one collection that ran is the server's full one, and it freed the
        # planted ring with whatever else was garbage (the closed peer's cycles):
        # the metric is exactly what the interpreter reported it found.
        assert planted_freed, "the server's collection did not free the planted cycle"
        assert [generation for generation, _ in collections] == [2], collections
        (_, found), = collections
        assert found >= PLANTED, collections
        assert value(after, "rpistream_cycle_collected_objects_total") == found
        assert 0 < value(after, "rpistream_cycle_collection_seconds_total") < 1
        assert value(after, "rpistream_viewers", camera="cam0", state="streaming") == 0
        assert ("rpistream_viewer_rtt_seconds", frozenset({("camera", "cam0"), ("stat", "max")})
                ) not in after
        doc = await stats(http, server)
        assert doc["viewers"] == [] and doc["disconnects"] == {"hung up": 1}
        assert doc["totals"] == {"viewers": 0, "bitrate_bps": 0}


async def test_tracemalloc_is_404_unless_enabled():
    async with serving() as server, aiohttp.ClientSession() as http:
        async with http.get(base_url(server) + "/api/debug/tracemalloc") as response:
            assert response.status == 404
    assert not tracemalloc.is_tracing()


async def test_tracemalloc_diff_when_enabled_behind_the_token():
    assert not tracemalloc.is_tracing()
    async with serving(monitor={"debug_api": True}, server={"token": TOKEN}) as server, \
            aiohttp.ClientSession() as http:
        url = base_url(server) + "/api/debug/tracemalloc"
        async with http.get(url) as response:
            assert response.status == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with http.get(url, headers=auth) as response:
            assert response.status == 200
            started = await response.json()
        assert started["tracing"] and started["top"] == [] and "call again" in started["note"]
        kept = [bytearray(1000) for _ in range(500)]  # 500 kB allocated between the calls
        async with http.get(url, headers=auth) as response:
            diff = await response.json()
        assert 0 < len(diff["top"]) <= 25 and diff["interval_s"] > 0
        top = diff["top"][0]  # the biggest growth first: the list above
        assert "test_metrics.py:" in top["site"]
        assert top["size_diff_bytes"] >= 500_000 and top["count_diff"] >= 500
        del kept
        async with http.get(url + "?stop=1", headers=auth) as response:
            assert (await response.json())["tracing"] is False
        assert not tracemalloc.is_tracing()
