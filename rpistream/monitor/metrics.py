"""GET /metrics: Prometheus text format, read from the live objects at scrape time."""

from __future__ import annotations

import asyncio
import resource

import psutil
from prometheus_client import CollectorRegistry, GCCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from rpistream.monitor.holdings import camera_holdings
from rpistream.monitor.memory import STATES as MEMORY_STATES
from rpistream.stream.health import STATES
from rpistream.webrtc.viewer import VIEWER_COUNTERS

# The text format Prometheus has always read (and every scraper since).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Viewer counter -> (metric name without _total, help). Summed per camera over
# the viewers that left (SessionRegistry.departed) and the ones still there,
# so a counter never goes down when a viewer leaves.
VIEWER_COUNTER_METRICS = {
    "frames_sent": ("rpistream_viewer_frames_sent", "Frames sent to viewers."),
    "frames_skipped": ("rpistream_viewer_frames_skipped",
                       "Frames viewers skipped: behind, or waiting for a keyframe."),
    "skips_to_keyframe": ("rpistream_viewer_skips_to_keyframe",
                          "Times a viewer dropped its queue to resume on a keyframe."),
    "packets_sent": ("rpistream_viewer_packets_sent", "Media RTP packets sent to viewers."),
    "bytes_on_wire": ("rpistream_viewer_bytes_sent",
                      "Bytes sent to viewers (SRTP, media, FEC and retransmissions)."),
    "nacks_received": ("rpistream_viewer_nacks_received",
                       "Packets viewers asked for again (RFC 4585 generic NACK)."),
    "packets_retransmitted": ("rpistream_viewer_packets_retransmitted",
                              "Packets resent in answer to NACKs."),
    "fec_packets_sent": ("rpistream_viewer_fec_packets_sent", "FEC packets sent to viewers."),
    "keyframe_requests": ("rpistream_viewer_keyframe_requests",
                          "Keyframes viewers asked for (PLI/FIR, joining, falling behind)."),
}
assert set(VIEWER_COUNTER_METRICS) == set(VIEWER_COUNTERS)


def _spread(family: GaugeMetricFamily, camera: str, values: list[float]) -> None:
    """min / avg / max of the current viewers' values (nothing if none has one)."""
    if values:
        for stat, value in (("min", min(values)), ("avg", sum(values) / len(values)),
                            ("max", max(values))):
            family.add_metric([camera, stat], value)


class ServerCollector:
    """A prometheus_client custom collector: every value is read from its
    owner when Prometheus scrapes, nothing is counted twice.

    RTT and loss are gauges of min / avg / max over the current viewers, per
    camera, not histograms: a Prometheus histogram is a set of counters of
    observations over time, and one rebuilt from the current viewers at each
    scrape would have buckets going up and down, which rate() and
    histogram_quantile() misread. A gauge per viewer would be exact, but its
    session label would make a new series for every viewer that ever came.
    """

    def __init__(self, cameras: dict, sessions, memory, forwards: list = (),
                 process: psutil.Process | None = None):
        self.cameras = cameras
        self.sessions = sessions
        self.memory = memory
        self.forwards = forwards
        self.process = process or psutil.Process()

    def collect(self):
        yield from self._process()
        yield from self._memory()
        yield from self._cameras()
        yield from self._viewers()
        yield from self._forwards()

    def _forwards(self):
        """Per forward to an SFU ([[camera.forward]]), labelled by camera and target."""
        labels = ["camera", "target"]
        up = GaugeMetricFamily("rpistream_forward_up",
                               "1 while the forward sends (not behind, dropped or starting again).",
                               labels=labels)
        counters = {key: CounterMetricFamily(name.replace("viewer", "forward", 1),
                                             text.replace("viewers", "the SFU"), labels=labels)
                    for key, (name, text) in VIEWER_COUNTER_METRICS.items()}
        restarts = CounterMetricFamily("rpistream_forward_restarts",
                                       "Times the forward fell behind or dropped and started again.",
                                       labels=labels)
        for forward in list(self.forwards):
            s = forward.stats()
            label = [s["camera"], s["target"]]
            up.add_metric(label, float(s["state"] == "forwarding"))
            restarts.add_metric(label, s["restarts"])
            for key, family in counters.items():
                family.add_metric(label, s["totals"][key])
        yield from (up, restarts, *counters.values())

    def _process(self):
        """The standard process_* families, from psutil rather than
        prometheus_client's ProcessCollector: that one needs /proc/stat, which
        the service's ProcSubset=pid hides, and then reports nothing."""
        process = self.process
        with process.oneshot():
            memory = process.memory_info()
            cpu = process.cpu_times()
            fds = process.num_fds()
        yield GaugeMetricFamily("process_resident_memory_bytes", "Resident memory size in bytes.",
                                value=memory.rss)
        yield GaugeMetricFamily("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                                value=memory.vms)
        yield CounterMetricFamily("process_cpu_seconds", "Total user and system CPU time "
                                  "spent in seconds.", value=cpu.user + cpu.system)
        yield GaugeMetricFamily("process_open_fds", "Number of open file descriptors.",
                                value=fds)
        yield GaugeMetricFamily("process_max_fds", "Maximum number of open file descriptors.",
                                value=resource.getrlimit(resource.RLIMIT_NOFILE)[0])

    def _memory(self):
        memory = self.memory
        slope = memory.slope()
        if slope is not None:
            yield GaugeMetricFamily(
                "rpistream_memory_rss_slope_mb_per_hour",
                "RSS growth in MiB per hour, least squares over the last hour of samples.",
                value=slope)
        if memory.rss is not None:
            yield GaugeMetricFamily("rpistream_memory_rss_sampled_bytes",
                                    "RSS at the memory watch's last sample.", value=memory.rss)
        state = GaugeMetricFamily("rpistream_memory_state",
                                  "1 for the memory watch's current state.", labels=["state"])
        for name in MEMORY_STATES:
            state.add_metric([name], float(memory.state == name))
        yield state
        threshold = GaugeMetricFamily("rpistream_memory_threshold_bytes",
                                      "RSS thresholds: warn logs, critical sheds load.",
                                      labels=["level"])
        threshold.add_metric(["warn"], memory.warn_bytes)
        threshold.add_metric(["critical"], memory.critical_bytes)
        yield threshold
        yield GaugeMetricFamily("rpistream_memory_leak_suspected",
                                "1 while RSS has grown faster than leak_slope_mb_per_h "
                                "for an hour.", value=float(memory.leak_suspected))
        yield CounterMetricFamily("rpistream_memory_viewers_shed",
                                  "Viewers disconnected because memory was critical.",
                                  value=memory.viewers_shed)
        cycles = self.sessions.cycles
        yield CounterMetricFamily("rpistream_cycle_collections",
                                  "Full garbage collections run after peers closed "
                                  "(their aiortc objects are reference cycles).",
                                  value=cycles.collections)
        yield CounterMetricFamily("rpistream_cycle_collected_objects",
                                  "Unreachable objects those collections freed.",
                                  value=cycles.collected)
        yield CounterMetricFamily("rpistream_cycle_collection_seconds",
                                  "Time the event loop spent in those collections.",
                                  value=cycles.seconds)
        yield GaugeMetricFamily("rpistream_asyncio_tasks", "asyncio tasks alive.",
                                value=len(asyncio.all_tasks()))
        yield GaugeMetricFamily("rpistream_peers",
                                "Open WHEP sessions (peer connections), connecting or streaming.",
                                value=len(self.sessions.sessions))

    def _cameras(self):
        def counter(name, help):
            return CounterMetricFamily(name, help, labels=["camera"])

        def gauge(name, help, labels=("camera",)):
            return GaugeMetricFamily(name, help, labels=list(labels))

        up = gauge("rpistream_camera_up",
                   "1 while the camera is live: a usable frame came within its stall timeout.")
        state = gauge("rpistream_camera_state",
                      "1 for the camera's current state (live, stalled, restarting, failed), "
                      "0 for the others.", labels=("camera", "state"))
        stalls = counter("rpistream_camera_stalls",
                         "Times the camera went without a usable frame past its stall timeout.")
        failures = counter("rpistream_camera_failures",
                           "Times the camera's source failed or could not start.")
        restarts = counter("rpistream_camera_restarts", "Restarts of the camera's source.")
        abandoned = counter("rpistream_camera_abandoned_threads",
                            "Source threads that did not stop when asked and were left behind.")
        recording = gauge("rpistream_recording", "1 while the camera is recorded to disk "
                          "and writing (not paused by a full or failing disk).")
        segments = counter("rpistream_recording_segments", "Recorded segments completed.")
        written = counter("rpistream_recording_bytes_written", "Bytes written to recordings.")
        recorder_dropped = counter("rpistream_recording_frames_dropped",
                                   "Frames the recorder dropped: its queue full (a slow disk) "
                                   "or the disk full.")
        write_max = gauge("rpistream_recording_write_seconds_max",
                          "Longest single write to the recording's disk so far.")
        disk_free = gauge("rpistream_recording_disk_free_bytes",
                          "Free bytes on the recording's disk, as last read.")
        recorder_held = gauge("rpistream_recording_queued_bytes",
                              "Bytes of frames waiting for the recording's disk.")
        rejected = counter("rpistream_camera_frames_rejected",
                           "Unusable frames the source delivered and rpistream dropped "
                           "(garbage, cut short, mislabelled).")
        frames = counter("rpistream_camera_frames", "Frames taken from the camera's ring.")
        keyframes = counter("rpistream_camera_keyframes", "Keyframes packetized.")
        bytes_in = counter("rpistream_camera_bytes",
                           "Encoded bytes from the source; rate() x 8 is its bitrate.")
        pushed = counter("rpistream_camera_ring_pushed", "Frames the source put in the ring.")
        dropped = counter("rpistream_camera_ring_dropped",
                          "Frames dropped because the ring was full (a stalled event loop).")
        skipped = counter("rpistream_camera_ring_skipped",
                          "Frames dropped after a drop, until the next keyframe.")
        requests = counter("rpistream_camera_keyframe_requests",
                           "Keyframes asked of the source.")
        suppressed = counter("rpistream_camera_keyframe_requests_suppressed",
                             "Keyframe requests put off by keyframe_min_interval.")
        capacity = gauge("rpistream_camera_ring_capacity_bytes", "The ring's fixed size.")
        used = gauge("rpistream_camera_ring_used_bytes", "Bytes waiting in the ring.")
        high = gauge("rpistream_camera_ring_high_water_bytes", "Most bytes ever in the ring.")
        batches = gauge("rpistream_camera_batches_held",
                        "Frame batches kept alive by viewers' queues and NACK histories.")
        batch_bytes = gauge("rpistream_camera_batches_held_bytes",
                            "Bytes of the frame batches viewers keep alive.")
        viewers = gauge("rpistream_camera_viewers", "Viewers of the camera.")
        fec_rate = gauge("rpistream_camera_fec_rate",
                         "FEC packets per media packet, per scheme in use.",
                         labels=("camera", "scheme"))
        fec_packets = CounterMetricFamily(
            "rpistream_camera_fec_packets", "FEC packets computed (once for all viewers).",
            labels=["camera", "scheme"])
        for name, camera in self.cameras.items():
            b = camera.broadcaster.stats()
            ring = camera.ring
            held = camera_holdings(camera)
            labels = [name]
            health = camera.health
            up.add_metric(labels, float(health.live))
            for each in STATES:
                state.add_metric([name, each], float(health.state == each))
            stalls.add_metric(labels, health.stalls)
            failures.add_metric(labels, health.failures)
            restarts.add_metric(labels, health.restarts)
            abandoned.add_metric(labels, health.abandoned_threads)
            rejected.add_metric(labels, camera.frames_rejected)
            if camera.recorder is not None:
                r = camera.recorder.stats()
                recording.add_metric(labels, float(r["state"] == "recording"))
                segments.add_metric(labels, r["segments"])
                written.add_metric(labels, r["bytes_written"])
                recorder_dropped.add_metric(labels, r["frames_dropped"])
                write_max.add_metric(labels, r["write_ms_max"] / 1000)
                if r["disk_free_bytes"] >= 0:
                    disk_free.add_metric(labels, r["disk_free_bytes"])
                recorder_held.add_metric(labels, r["queue_bytes"])
            frames.add_metric(labels, b["frames"])
            keyframes.add_metric(labels, b["keyframes"])
            bytes_in.add_metric(labels, ring.bytes_pushed)
            pushed.add_metric(labels, ring.pushed)
            dropped.add_metric(labels, ring.dropped)
            skipped.add_metric(labels, ring.skipped)
            requests.add_metric(labels, b["keyframe_requests"])
            suppressed.add_metric(labels, b["keyframe_requests_suppressed"])
            capacity.add_metric(labels, ring.capacity)
            used.add_metric(labels, ring.used)
            high.add_metric(labels, ring.high_water)
            batches.add_metric(labels, held["batches_held"])
            batch_bytes.add_metric(labels, held["batch_bytes_held"])
            viewers.add_metric(labels, b["viewers"])
            for scheme, fec in b["fec"].items():
                fec_rate.add_metric([name, scheme], fec["rate"])
                fec_packets.add_metric([name, scheme], fec["packets"])
        yield from (recording, segments, written, recorder_dropped, write_max, disk_free,
                    recorder_held)
        yield from (up, state, stalls, failures, restarts, abandoned, rejected, frames, keyframes, bytes_in, pushed, dropped, skipped, requests,
                    suppressed, capacity, used, high, batches, batch_bytes, viewers,
                    fec_rate, fec_packets)

    def _viewers(self):
        sessions = self.sessions
        by_camera: dict[str, list] = {name: [] for name in self.cameras}
        for s in list(sessions.sessions.values()):
            if s.viewer is not None:
                by_camera.setdefault(s.camera.name, []).append(s.viewer)
        states = GaugeMetricFamily("rpistream_viewers", "Viewers by camera and state.",
                                   labels=["camera", "state"])
        queued = GaugeMetricFamily("rpistream_viewer_queued_frames",
                                   "Frames waiting in viewers' queues.", labels=["camera"])
        rtt = GaugeMetricFamily("rpistream_viewer_rtt_seconds",
                                "Round-trip time (RTCP SR/RR), min / avg / max over the "
                                "current viewers.", labels=["camera", "stat"])
        loss = GaugeMetricFamily("rpistream_viewer_loss_ratio",
                                 "Packet loss over the last second (RTCP RR), min / avg / max "
                                 "over the current viewers.", labels=["camera", "stat"])
        counters = {attr: CounterMetricFamily(name, help, labels=["camera"])
                    for attr, (name, help) in VIEWER_COUNTER_METRICS.items()}
        for name in by_camera.keys() | sessions.departed.keys():
            viewers = by_camera.get(name, [])
            counts: dict[str, int] = {}
            for viewer in viewers:
                counts[viewer.state] = counts.get(viewer.state, 0) + 1
            for state in ("streaming", "behind", "waiting-for-keyframe"):
                states.add_metric([name, state], counts.get(state, 0))
            queued.add_metric([name], sum(v.queue_depth for v in viewers))
            departed = sessions.departed.get(name, {})
            for attr, family in counters.items():
                family.add_metric([name], departed.get(attr, 0)
                                  + sum(getattr(v, attr) for v in viewers))
            _spread(rtt, name, [v.rtt for v in viewers if v.rtt is not None])
            _spread(loss, name, [v.loss for v in viewers if v.last_rtcp is not None])
        disconnects = CounterMetricFamily("rpistream_viewer_disconnects",
                                          "Sessions closed, by reason.", labels=["reason"])
        for reason, count in sorted(sessions.disconnects.items()):
            disconnects.add_metric([reason], count)
        yield from (states, queued, *counters.values(), rtt, loss, disconnects)


def metrics_registry(cameras: dict, sessions, memory, forwards: list = ()) -> CollectorRegistry:
    """A registry of this server's own (not prometheus_client's global one, so
    two servers in one process, as in the tests, do not mix): the standard
    process_* and python_gc_* families, and rpistream's."""
    registry = CollectorRegistry()
    GCCollector(registry=registry)
    registry.register(ServerCollector(cameras, sessions, memory, forwards))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
