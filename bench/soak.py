"""Soak benchmark: does the server's memory stay flat for an hour of viewers coming and going?

A real rpistream Server (test-pattern camera, H.264 1280x720 at 30 fps by
default) runs alone in a child process; V aiortc viewers run in another child
(ICE on 127.0.0.1 only, nothing decoded: see bench_fanout.py), one of them
hanging up and opening a new WHEP session every S seconds. This process
samples the server child's RSS (psutil) every few seconds, writes a CSV (with,
beside RSS, glibc's heap in use and free and the interpreter's live blocks and
gc-tracked objects: a leak grows the first, fragmentation the second) and a
PNG plot into the output directory and prints:

- baseline_mb: the server's RSS once warmed up (the median of the samples in
  the last 10 % of the warm-up, the first 20 % of the run at most 5 minutes:
  allocator pools, the encoder's buffers and aiortc's caches fill in that time);
- peak_mb: the largest sample after the warm-up;
- slope_mb_per_h: least-squares slope of RSS over time after the warm-up;
- reconnects: sessions the reconnecting viewer opened after its first.

With --record the camera records all along (segments of 10 s, retention at
RECORD_MAX_BYTES so that an hour stays on the disk's scale and retention
runs too), into a temporary directory; the recorder's figures are added.

Targets, at 60 minutes, 10 viewers and a reconnect every 10 s: slope ≤ 1 MB/h
and peak ≤ baseline + 15 MB. A short run's slope says little (a few MB of
allocator noise over two minutes extrapolates to tens of MB an hour); it is
a quick look, not a verdict.

    python bench/soak.py [--minutes M] [--viewers V] [--reconnect-every S]
                         [--small] [--record] [--out DIR] [--json] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import ctypes
import gc
import json
import os
import statistics
import sys
import tempfile
import time

from child import ROOT, Child, emit, run_if_child, stdin_lines

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # rpistream when not installed

LARGE = {"width": 1280, "height": 720, "fps": 30, "bitrate": 4_000_000}
SMALL = {"width": 640, "height": 360, "fps": 30, "bitrate": 1_000_000}
QUICK = {"minutes": 1.0, "viewers": 3, "reconnect_every": 5.0}
WARMUP_SHARE = 0.2
WARMUP_MAX = 300.0  # seconds
TARGET_SLOPE_MB_PER_H = 1.0
TARGET_PEAK_OVER_BASELINE_MB = 15.0
# --record: 10 s segments, so that even a quick run completes several; 20 MB
# is about four minutes of the test pattern at 720p (its simple picture
# makes ~0.65 Mbit/s), so retention deletes segments all through a long run.
RECORD_SEGMENT_S = 10
RECORD_MAX_BYTES = "20M"
# Bounds on every wait, in seconds.
START_TIMEOUT = 30.0  # a child up (imports, camera started)
CONNECT_TIMEOUT = 20.0  # a viewer's first frame
CLOSE_TIMEOUT = 5.0


# --- children (bench/child.py): the server and the viewers ------------------------------

class MallInfo2(ctypes.Structure):
    """glibc's struct mallinfo2 (glibc ≥ 2.33; Debian 12 has 2.36)."""
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


def heap_figures() -> dict:
    """Where the server's memory is, to tell a leak (bytes in use grow) from
    allocator fragmentation (free bytes held in the heap grow): glibc's heap
    in use and free (all arenas, plus mmapped blocks), and the interpreter's
    live blocks and gc-tracked objects."""
    figures = {"py_blocks": sys.getallocatedblocks(), "gc_objects": len(gc.get_objects())}
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except AttributeError:  # not glibc
        return figures
    mallinfo2.restype = MallInfo2
    info = mallinfo2()
    figures["malloc_in_use_mb"] = (info.uordblks + info.hblkhd) / 2**20
    figures["malloc_free_mb"] = info.fordblks / 2**20
    return figures


async def child_server(picture: dict, record_directory: str) -> None:
    from rpistream.config import parse_config
    from rpistream.webrtc.cycles import freeze_startup
    from rpistream.server import Server

    record = {"enabled": True, "directory": record_directory,
              "segment_seconds": RECORD_SEGMENT_S, "max_bytes": RECORD_MAX_BYTES,
              "min_free_bytes": "1M"} if record_directory else {}
    config = parse_config({
        "server": {"host": "127.0.0.1", "port": 0, "ice_hosts": ["127.0.0.1"]},
        "camera": [{"name": "cam0", "source": "testpattern", "codec": "h264", **picture,
                    "record": record}],
        "limits": {"max_viewers": 64, "max_viewers_per_camera": 64},
    })
    server = Server(config)
    await server.start()
    freeze_startup()  # as rpistream.server.serve() does
    try:
        emit({"pid": os.getpid(),
              "url": f"http://127.0.0.1:{server.port}/cameras/cam0/whep"})
        async for command in stdin_lines():
            if command["op"] == "stats":
                broadcaster = server.cameras["cam0"].broadcaster
                recorder = server.cameras["cam0"].recorder
                emit({"sessions": server.sessions.count(),
                      "recorder": recorder.stats() if recorder else None,
                      "viewers": len(broadcaster.viewers),
                      "frames": broadcaster.frames,
                      "disconnects": dict(server.sessions.disconnects),
                      "collections": server.sessions.cycles.collections,
                      "collect_ms": server.sessions.cycles.seconds * 1000,
                      **heap_figures()})
            elif command["op"] == "quit":
                return
    finally:
        await server.stop()


async def child_viewers(url: str, count: int, reconnect_every: float) -> None:
    import aiohttp
    import aioice.ice
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription

    from rpistream.webrtc import aiortc_internals

    aiortc_internals.restrict_host_addresses(["127.0.0.1"])
    # Count RTP marker bits as datagrams arrive, before aioice and SRTP
    # (RFC 3711 §3.1: the header is in the clear); STUN, DTLS and RTCP still go
    # to aiortc, so ICE consent and DTLS stay up. Nothing is decrypted or
    # decoded: the viewers must cost little on two cores shared with the server.
    frames: dict = {}  # aioice Connection -> [frames]
    datagram_received = aioice.ice.StunProtocol.datagram_received

    def count_at_socket(self, data, addr):
        counters = frames.get(self.receiver)
        # RFC 7983 §7: 128-191 is RTP/RTCP; RFC 5761 §4: 192-223 second byte is RTCP.
        if counters is not None and 127 < data[0] < 192 and not 191 < data[1] < 224:
            counters[0] += data[1] >> 7  # RFC 6184 §5.1: M marks an access unit's end
            return
        datagram_received(self, data, addr)

    aioice.ice.StunProtocol.datagram_received = count_at_socket
    video = [c for c in RTCRtpReceiver.getCapabilities("video").codecs
             if c.mimeType in ("video/H264", "video/rtx")]

    class Peer:
        def __init__(self):
            self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            transceiver = self.pc.addTransceiver("video", direction="recvonly")
            transceiver.setCodecPreferences(video)
            self.counters = [0]
            frames[transceiver.receiver.transport.transport._connection] = self.counters
            self.location = None

        async def connect(self, http) -> None:
            await self.pc.setLocalDescription(await self.pc.createOffer())
            async with http.post(url, data=self.pc.localDescription.sdp,
                                 headers={"Content-Type": "application/sdp"}) as response:
                answer = await response.text()
                if response.status != 201:
                    raise RuntimeError(f"{url}: {response.status} {answer.strip()}")
                self.location = response.headers["Location"]
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            for _ in range(int(CONNECT_TIMEOUT / 0.02)):
                if self.counters[0]:
                    return
                await asyncio.sleep(0.02)
            raise TimeoutError(f"a viewer got no frame within {CONNECT_TIMEOUT:g} s")

        async def hang_up(self, http) -> None:
            base = url.split("/cameras/")[0]
            async with http.delete(base + self.location) as response:
                if response.status != 200:
                    raise RuntimeError(f"DELETE {self.location}: {response.status}")
            await self.close()

        async def close(self) -> None:
            frames.pop(self.pc.getTransceivers()[0].receiver.transport.transport._connection,
                       None)
            await self.pc.close()

    steady: list[Peer] = []
    state = {"reconnects": 0, "reconnect_frames": 0, "errors": 0, "last_error": None}
    reconnecting: Peer | None = None

    async def reconnect_loop(http):
        nonlocal reconnecting
        while True:
            await asyncio.sleep(reconnect_every)
            try:
                await asyncio.wait_for(reconnecting.hang_up(http), CLOSE_TIMEOUT)
                state["reconnect_frames"] += reconnecting.counters[0]
                reconnecting = Peer()
                await asyncio.wait_for(reconnecting.connect(http), CONNECT_TIMEOUT + 5)
                state["reconnects"] += 1
            except Exception as exc:  # counted and reported; the soak goes on
                state["errors"] += 1
                state["last_error"] = f"{type(exc).__name__}: {exc}"

    async with aiohttp.ClientSession() as http:
        loop_task = None
        try:
            steady = [Peer() for _ in range(count - 1)]
            reconnecting = Peer()
            await asyncio.wait_for(asyncio.gather(
                *(peer.connect(http) for peer in steady + [reconnecting])), CONNECT_TIMEOUT)
            emit({"viewers": count})
            loop_task = asyncio.ensure_future(reconnect_loop(http))
            async for command in stdin_lines():
                if command["op"] == "counts":
                    emit({"steady_frames": [p.counters[0] for p in steady],
                          "reconnecting_frames": state["reconnect_frames"]
                          + reconnecting.counters[0],
                          "reconnects": state["reconnects"], "errors": state["errors"],
                          "last_error": state["last_error"]})
                elif command["op"] == "quit":
                    return
        except Exception as exc:
            emit({"error": f"{type(exc).__name__}: {exc}"})
        finally:
            if loop_task is not None:
                loop_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop_task
            peers = steady + ([reconnecting] if reconnecting else [])
            await asyncio.wait_for(asyncio.gather(*(p.close() for p in peers),
                                                  return_exceptions=True), CLOSE_TIMEOUT)


CHILD_ROLES = {
    "server": lambda picture, record_directory: child_server(json.loads(picture),
                                                             record_directory),
    "viewers": lambda url, count, reconnect_every: child_viewers(url, int(count),
                                                                 float(reconnect_every)),
}


# --- the parent -------------------------------------------------------------------------

async def start_child(role: str, *args: str) -> Child:
    return await Child.start(__file__, role, *args, quit_timeout=CLOSE_TIMEOUT + 5)


SAMPLE_COLUMNS = ("t_s", "rss_mb", "reconnects", "sessions", "malloc_in_use_mb",
                  "malloc_free_mb", "py_blocks", "gc_objects")


def sample_row(elapsed: float, rss: float, counts: dict, stats: dict) -> tuple:
    return (round(elapsed, 2), round(rss, 3), counts["reconnects"], stats["sessions"],
            round(stats.get("malloc_in_use_mb", float("nan")), 3),
            round(stats.get("malloc_free_mb", float("nan")), 3),
            stats["py_blocks"], stats["gc_objects"])


def least_squares_slope(xs: list[float], ys: list[float]) -> float:
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sxx if sxx else 0.0


async def run(args) -> dict:
    import psutil

    duration = args.minutes * 60
    interval = args.sample_every or max(1.0, min(5.0, duration / 60))
    picture = SMALL if args.small else LARGE
    record_directory = tempfile.TemporaryDirectory(prefix="rpistream-soak-") \
        if args.record else None
    server = await start_child("server", json.dumps(picture),
                               record_directory.name if record_directory else "")
    viewers = None
    samples: list[tuple] = []  # one row of SAMPLE_COLUMNS each
    try:
        hello = await server.reply(START_TIMEOUT)
        process = psutil.Process(hello["pid"])
        viewers = await start_child("viewers", hello["url"], str(args.viewers),
                                    str(args.reconnect_every))
        await viewers.reply(START_TIMEOUT + CONNECT_TIMEOUT)
        started = time.monotonic()
        counts = {"reconnects": 0}
        while (elapsed := time.monotonic() - started) < duration:
            rss = process.memory_info().rss / 2**20
            counts = await viewers.ask(op="counts")
            stats = await server.ask(op="stats")
            samples.append(sample_row(elapsed, rss, counts, stats))
            if args.verbose:
                print("  ".join(f"{k} {v:g}" for k, v in zip(SAMPLE_COLUMNS, samples[-1])),
                      file=sys.stderr, flush=True)
            await asyncio.sleep(min(interval, max(0.0, duration - elapsed)))
        wall = time.monotonic() - started
        counts = await viewers.ask(op="counts")
        stats = await server.ask(op="stats")
        rss = process.memory_info().rss / 2**20
        samples.append(sample_row(wall, rss, counts, stats))
    finally:
        if viewers is not None:
            await viewers.stop()
        await server.stop()
        if record_directory:
            record_directory.cleanup()
    return {"samples": samples, "counts": counts, "stats": stats, "wall": wall,
            "picture": picture, "interval": interval}


def summarize(result: dict, args) -> dict:
    samples = result["samples"]
    wall = result["wall"]
    warmup = min(WARMUP_SHARE * wall, WARMUP_MAX)
    times = [t for t, *_ in samples]
    rss = [r for _, r, *_ in samples]
    after = [(t, r) for t, r in zip(times, rss) if t >= warmup]
    tail = [r for t, r in zip(times, rss) if warmup * 0.9 <= t <= warmup] or [after[0][1]]
    baseline = statistics.median(tail)
    peak = max(r for _, r in after)
    slope = least_squares_slope([t for t, _ in after], [r for _, r in after]) * 3600
    counts, stats = result["counts"], result["stats"]
    figures = {
        "baseline_mb": round(baseline, 2),
        "peak_mb": round(peak, 2),
        "slope_mb_per_h": round(slope, 3),
        "reconnects": counts["reconnects"],
        "reconnect_errors": counts["errors"],
        "last_reconnect_error": counts["last_error"],
        "start_mb": round(rss[0], 2),
        "end_mb": round(rss[-1], 2),
        "peak_over_baseline_mb": round(peak - baseline, 2),
        "warmup_s": round(warmup, 1),
        "samples": len(samples),
        "sample_every_s": result["interval"],
        "minutes": round(wall / 60, 2),
        "viewers": args.viewers,
        "reconnect_every_s": args.reconnect_every,
        "picture": result["picture"],
        # Frames the steady viewers got per second (RTP marker bits): ~30 while
        # the server keeps up, including through every reconnect.
        "steady_viewer_fps_min": round(min(counts["steady_frames"]) / wall, 2)
        if counts["steady_frames"] else None,
        "server_sessions_at_end": stats["sessions"],
        "server_disconnects": stats["disconnects"],
        # Cycle collections after viewers left (rpistream/webrtc/cycles.py)
        # and the event loop's time in each, on average.
        "gc_collections": stats["collections"],
        "gc_ms_mean": round(stats["collect_ms"] / stats["collections"], 2)
        if stats["collections"] else None,
        "targets": {"slope_mb_per_h": TARGET_SLOPE_MB_PER_H,
                    "peak_over_baseline_mb": TARGET_PEAK_OVER_BASELINE_MB},
    }
    recorder = stats["recorder"]
    if recorder:
        figures["recording"] = {key: recorder[key] for key in (
            "state", "segments", "segments_deleted", "frames_written", "frames_dropped",
            "bytes_written", "queue_bytes_max", "write_ms_max")}
    figures["slope_met"] = slope <= TARGET_SLOPE_MB_PER_H
    figures["peak_met"] = peak - baseline <= TARGET_PEAK_OVER_BASELINE_MB
    return figures


def write_outputs(result: dict, figures: dict, out: str) -> tuple[str, str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    stem = os.path.join(out, f"soak-{stamp}-{figures['viewers']}v"
                              + ("-record" if "recording" in figures else ""))
    with open(stem + ".csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(SAMPLE_COLUMNS)
        writer.writerows(result["samples"])
    times = [t / 60 for t, *_ in result["samples"]]
    rss = [r for _, r, *_ in result["samples"]]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(times, rss, ".-", lw=1, ms=3, label="server RSS")
    warm = figures["warmup_s"] / 60
    ax.axvline(warm, color="grey", ls=":", label="end of warm-up")
    ax.axhline(figures["baseline_mb"], color="green", ls="--", lw=1,
               label=f"baseline {figures['baseline_mb']:.1f} MB")
    ax.axhline(figures["baseline_mb"] + TARGET_PEAK_OVER_BASELINE_MB, color="red", ls="--",
               lw=1, label=f"baseline + {TARGET_PEAK_OVER_BASELINE_MB:g} MB (peak target)")
    after = [(t, r) for t, r in zip(times, rss) if t >= warm]
    if len(after) >= 2:
        mean_t = statistics.fmean(t for t, _ in after)
        mean_r = statistics.fmean(r for _, r in after)
        slope_per_min = figures["slope_mb_per_h"] / 60
        ends = [after[0][0], after[-1][0]]
        ax.plot(ends, [mean_r + slope_per_min * (t - mean_t) for t in ends], color="orange",
                label=f"fit: {figures['slope_mb_per_h']:+.2f} MB/h")
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS (MiB)")
    ax.set_title(f"rpistream soak: {figures['viewers']} viewers, one reconnecting every "
                 f"{figures['reconnect_every_s']:g} s ({figures['reconnects']} reconnects)"
                 + (", recording" if "recording" in figures else ""))
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(stem + ".png", dpi=100)
    plt.close(fig)
    return stem + ".csv", stem + ".png"


def main() -> None:
    if run_if_child(CHILD_ROLES):
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--viewers", type=int, default=10)
    parser.add_argument("--reconnect-every", type=float, default=10.0, metavar="S")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK['minutes']:g} minute, {QUICK['viewers']} viewers, "
                             f"a reconnect every {QUICK['reconnect_every']:g} s")
    parser.add_argument("--small", action="store_true",
                        help="640x360 at 1 Mbit/s instead of 1280x720 at 4 Mbit/s")
    parser.add_argument("--record", action="store_true",
                        help=f"the camera records all along ({RECORD_SEGMENT_S} s segments, "
                             f"retention at {RECORD_MAX_BYTES})")
    parser.add_argument("--sample-every", type=float, default=None, metavar="S",
                        help="seconds between RSS samples (default: 1-5, by run length)")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "out"))
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object as the last line")
    parser.add_argument("--verbose", action="store_true", help="print each sample to stderr")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.viewers = QUICK["minutes"], QUICK["viewers"]
        args.reconnect_every = QUICK["reconnect_every"]
    if args.viewers < 2:
        parser.error("--viewers must be at least 2: one steady, one reconnecting")
    result = asyncio.run(run(args))
    figures = summarize(result, args)
    figures["csv"], figures["png"] = write_outputs(result, figures, args.out)
    print(f"server RSS: baseline {figures['baseline_mb']} MB (after a "
          f"{figures['warmup_s']:g} s warm-up), peak {figures['peak_mb']} MB "
          f"(+{figures['peak_over_baseline_mb']} MB, target ≤ "
          f"{TARGET_PEAK_OVER_BASELINE_MB:g}: {'met' if figures['peak_met'] else 'MISSED'}), "
          f"slope {figures['slope_mb_per_h']:+.3f} MB/h (target ≤ {TARGET_SLOPE_MB_PER_H:g}: "
          f"{'met' if figures['slope_met'] else 'MISSED'})")
    print(f"{figures['minutes']} min, {figures['viewers']} viewers, {figures['reconnects']} "
          f"reconnects ({figures['reconnect_errors']} failed), steady viewers got "
          f"≥ {figures['steady_viewer_fps_min']} fps; sessions left on the server: "
          f"{figures['server_sessions_at_end']}")
    if "recording" in figures:
        rec = figures["recording"]
        print(f"recording: {rec['state']}, {rec['segments']} segments "
              f"({rec['segments_deleted']} deleted by retention), {rec['frames_written']} "
              f"frames written, {rec['frames_dropped']} dropped")
    print(f"wrote {figures['csv']} and {figures['png']}")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
