"""The schema: every section and key of the config, its type, bounds and help.

Each key is described here and nowhere else: validation, error messages,
`--camera` parsing and config.example.toml are derived from these
dataclasses, and the sources take a validated CameraConfig without checking
it again. A comment above a bound says why it has its value.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from rpistream.config.values import (INVALID, Bitrate, Bool, ByteSize, Choice, IceUrls, Int,
                                     IpAddress,
                                     ListOf, Number, ProtectionRate, Seconds, Section, Str,
                                     Table, ValueType, key, show)


@dataclass(frozen=True, kw_only=True)
class IceServer(Section):
    urls: tuple[str, ...] = key(
        IceUrls(),
        "Server URL(s), e.g. \"stun:stun.example.org:3478\", or for TURN over UDP, "
        "TCP and TLS [\"turn:t.example.org:3478?transport=udp\", "
        "\"turn:t.example.org:3478?transport=tcp\", \"turns:t.example.org:5349\"].")
    username: str | None = key(
        Str(), "TURN: the user name; with secret_file, the name in each minted user name.",
        None)
    credential: str | None = key(Str(), "TURN: the password (static credentials).", None)
    secret_file: str | None = key(
        Str(described="the path of a file that holds the secret"),
        "TURN: a file holding the secret shared with the TURN server (coturn's "
        "static-auth-secret with use-auth-secret). Each viewer then gets its own "
        "credentials, valid for credential_lifetime (the TURN REST API), instead of "
        "a password that never expires. Read at startup; never logged.",
        None, example="/etc/rpistream/turn-secret")
    # Bounds: under 10 minutes a relay would lose its allocation at its first
    # refresh (RFC 8656 §7: allocations live 10 minutes unless refreshed, and a
    # refresh is authenticated with the same credentials); over a week a
    # leaked credential is good for too long. Default a day: a page watched
    # longer reconnects, and gets new credentials then.
    credential_lifetime: float = key(
        Seconds(600, 7 * 86400),
        "TURN with secret_file: seconds a viewer's credentials stay valid.", 86400.0)
    # The secret_file's content, read by the loader (rpistream/config/loader.py);
    # not a key, and never shown.
    secret: str | None = dataclasses.field(default=None, repr=False, compare=False)

    @staticmethod
    def problems(values):
        turn = any(u.startswith("turn") for u in values.get("urls", ()))
        static = values.get("username") is not None and values.get("credential") is not None
        if values.get("secret_file") is not None:
            if not turn:
                yield "secret_file", "only TURN servers take a secret (their URLs start with turn)"
            if values.get("credential") is not None:
                yield "credential", ("give either credential (static) or secret_file "
                                     "(time-limited credentials), not both")
        # RFC 8656 §9.2: TURN allocations are authenticated; STUN binding is not.
        elif turn and not static:
            yield "urls", "TURN servers need username and credential, or secret_file"


@dataclass(frozen=True, kw_only=True)
class ServerConfig(Section):
    host: str = key(
        Str(pattern=r"\S+", described="a host name or IP address"),
        "Address the HTTP server (viewer page, WHEP, API) listens on. \"0.0.0.0\" "
        "is every IPv4 interface, because cameras are watched from other "
        "machines; \"::\" adds IPv6; \"127.0.0.1\" keeps it on this machine.",
        "0.0.0.0")
    port: int = key(
        Int(0, 65535),
        "TCP port of the HTTP server. 8080 is unprivileged, so the service "
        "needs no root or CAP_NET_BIND_SERVICE. 0 takes any free port.",
        8080)
    ice_hosts: tuple[str, ...] = key(
        ListOf(IpAddress()),
        "IP addresses to offer browsers as ICE host candidates. Empty: the "
        "addresses found on this machine's interfaces. Set it when viewers "
        "reach the Pi through an address it cannot see (port forwarding, a "
        "container), or to offer 127.0.0.1, which the ICE library skips.",
        (), example=("192.168.1.20",))
    ice_servers: tuple[IceServer, ...] = key(
        ListOf(Table(IceServer)),
        "STUN and TURN servers, for viewers outside this network; viewers get "
        "them with the access token. Each is { urls = \"stun:...\" | \"turn:...\" | "
        "[...], username = \"...\", credential = \"...\" }; TURN needs username "
        "and credential, or secret_file = \"/path\" (the secret shared with "
        "coturn's use-auth-secret: each viewer gets credentials valid for "
        "credential_lifetime seconds, a day by default). Empty: on a LAN host "
        "candidates are enough, and a default public STUN server would make "
        "every connection depend on the internet.",
        (), example=(IceServer(urls=("stun:stun.example.org:3478",)),
                     IceServer(urls=("turn:turn.example.org:3478",),
                               username="pi", credential="secret"),
                     IceServer(urls=("turn:turn.example.org?transport=tcp",),
                               secret_file="/etc/rpistream/turn-secret")))
    token: str | None = key(
        Str(min_len=16),
        "Access token viewers must present. Not set: anyone who can reach the "
        "port may watch. At least 16 characters, so that it cannot be guessed.",
        None, example="change-me-to-a-long-random-string")
    token_file: str | None = key(
        Str(described="the path of a file that holds the token"),
        "A file holding the access token, read at startup, used when `token` "
        "is not set. The Debian package generates /etc/rpistream/token on "
        "first install and points here, so the token is not in this file.",
        None, example="/etc/rpistream/token")


@dataclass(frozen=True, kw_only=True)
class TestpatternOptions(Section):
    """The test pattern takes no options."""  # shown in messages and the example

    __test__ = False  # not a pytest test class, despite its name


@dataclass(frozen=True, kw_only=True)
class Picamera2Options(Section):
    # libcamera numbers cameras from 0; 15 is far above any board's connectors.
    camera_num: int = key(Int(0, 15), "Which camera, as numbered by libcamera (0 is the first).", 0)
    hflip: bool = key(Bool(), "Mirror the image left to right.", False)
    vflip: bool = key(Bool(), "Flip the image upside down.", False)


# A file camera's codec, by its file's extension: H.264 as an Annex-B byte
# stream (it has no container), VP8 in IVF, libvpx's container.
FILE_CODECS = {".h264": "h264", ".264": "h264", ".ivf": "vp8"}


def file_codec(path: str) -> str:
    """The codec of a file camera's validated `path`, by its extension."""
    return next(codec for ext, codec in FILE_CODECS.items() if path.lower().endswith(ext))


@dataclass(frozen=True, kw_only=True)
class FileOptions(Section):
    path: str = key(
        Str(pattern="(?is).*(?:" + "|".join(map(re.escape, FILE_CODECS)) + ")",
            described="the path of an Annex-B H.264 file (.h264, .264) or of an IVF "
                      "file of VP8 (.ivf)"),
        "The encoded file to replay; its extension says which codec it holds, "
        "and the camera's codec must be that one.",
        example="/var/lib/rpistream/clip.h264")
    loop: bool = key(Bool(), "Start again at the end of the file.", True)


# Where recordings go unless `directory` says: the service's StateDirectory
# (debian/rpistream.service), a directory per camera.
RECORDINGS = "/var/lib/rpistream/recordings"


@dataclass(frozen=True, kw_only=True)
class RecordConfig(Section):
    enabled: bool = key(
        Bool(),
        "Record the camera to disk while it streams: its frames as they are, "
        "no re-encoding, in segments (fragmented MP4 for H.264, WebM for VP8).",
        False)
    directory: str | None = key(
        Str(described="the path of a directory"),
        "Where the camera's segments go (created if missing).",
        None, default_text=RECORDINGS + "/<camera name>", example="/mnt/usb/front")
    # Bounds: under 2 s a segment would hold about one keyframe interval; over
    # an hour a crash or a deletion by retention loses too much at once.
    segment_seconds: float = key(
        Seconds(2, 3600),
        "Length of a segment file. Segments start on keyframes; one minute "
        "is easy to browse and a retention step of about 30 MB at 4 Mbit/s.",
        60.0)
    # Bounds: a minute to ten years.
    max_age: float | None = key(
        Seconds(60, 10 * 365 * 86400),
        "Seconds after which a segment is deleted. Not set: segments are kept "
        "until max_bytes or min_free_bytes needs their space.",
        None, example=7 * 86400)
    max_bytes: int | None = key(
        ByteSize(2**20, 2**50),
        "Most bytes this camera's segments may take; the oldest go first.",
        None, example="20G")
    # Bounds: 0 would let a camera fill the disk; up to a petabyte.
    min_free_bytes: int = key(
        ByteSize(2**20, 2**50),
        "Free space to keep on the recording's disk: the oldest segments are "
        "deleted to keep it, and recording pauses when deleting cannot. 1G "
        "keeps a Pi's SD card usable (logs, updates) whatever is recorded.",
        2**30)


@dataclass(frozen=True, kw_only=True)
class ForwardConfig(Section):
    """One [[camera.forward]] table: the camera's packets to an SFU."""

    type: str = key(
        Choice(("rtp", "whip")),
        "\"rtp\": the camera's RTP packets (the ones its viewers get, with their own "
        "SSRC and sequence numbers) to host:port, e.g. a Janus streaming mountpoint; "
        "RTCP both ways on rtcp_port. \"whip\": published over WebRTC to a WHIP "
        "endpoint (RFC 9725: Janus behind a WHIP server, MediaMTX, LiveKit ingress, "
        "cloud services) at url.", example="rtp")
    host: str | None = key(IpAddress(), "rtp: where the SFU receives the stream.", None,
                           default_text="none, required with type \"rtp\"",
                           example="192.168.1.50")
    port: int | None = key(Int(1, 65535), "rtp: its RTP port (Janus: the mountpoint's "
                           "videoport).", None, default_text="none, required with type \"rtp\"",
                           example=5004)
    rtcp_port: int | None = key(
        Int(1, 65535),
        "rtp: its RTCP port (Janus: videortcpport): sender reports go there, and "
        "keyframe requests (PLI, FIR) come back from it.",
        None, default_text="port + 1 (RFC 3550 §11)", example=5005)
    # Bounds: RFC 3551 §6 leaves 96-127 to dynamic payload types.
    payload_type: int = key(
        Int(96, 127), "rtp: the RTP payload type the SFU expects (Janus: videopt).", 96)
    url: str | None = key(
        Str(pattern=r"https?://[^\s/]+\S*", described="an http:// or https:// URL"),
        "whip: the WHIP endpoint the stream is published to.", None,
        default_text="none, required with type \"whip\"", example="https://sfu.example.org/whip/cam0")
    bearer_token_file: str | None = key(
        Str(described="the path of a file that holds the token"),
        "whip: a file holding the bearer token the endpoint asks for (RFC 9725 "
        "§4.5). Read at startup; never logged.", None, example="/etc/rpistream/whip-token")
    # The bearer_token_file's content, read by the loader
    # (rpistream/config/loader.py); not a key, and never shown.
    bearer_token: str | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def rtcp(self) -> int:
        return self.rtcp_port if self.rtcp_port is not None else self.port + 1

    @property
    def target(self) -> str:
        return self.url if self.type == "whip" else f"rtp://{self.host}:{self.port}"

    @staticmethod
    def problems(values):
        kind = values.get("type")
        for name in REQUIRED_BY_TYPE.get(kind, ()):
            if values.get(name) is None:
                yield name, f"missing; a forward of type {kind} needs it"
        for other, names in KEYS_BY_TYPE.items():
            if kind not in KEYS_BY_TYPE or other == kind:
                continue
            for name in names:
                # payload_type has a default: whether it was given cannot be told.
                if name != "payload_type" and values.get(name) is not None:
                    yield name, f"is for forwards of type {other}, not {kind}"


# The keys of each forward type (besides `type`), and those it requires.
KEYS_BY_TYPE = {"rtp": ("host", "port", "rtcp_port", "payload_type"),
                "whip": ("url", "bearer_token_file")}
REQUIRED_BY_TYPE = {"rtp": ("host", "port"), "whip": ("url",)}


# `source` kind -> its options. The keys are the allowed `source` values.
SOURCE_OPTIONS: dict[str, type] = {
    "testpattern": TestpatternOptions,
    "picamera2": Picamera2Options,
    "file": FileOptions,
}


class SourceOptions(ValueType):
    """`options`: a table whose keys depend on the camera's `source`."""

    allowed = "a table of options for the camera's source"
    missing_as = {}  # left out: the source's defaults, checked (a file's path is required)

    def parse(self, value, path, walk, siblings):
        source = siblings.get("source", INVALID)
        if source is INVALID:  # already reported; the options cannot be judged
            return INVALID
        return Table(SOURCE_OPTIONS[source]).parse(value, path, walk, siblings)


@dataclass(frozen=True, kw_only=True)
class CameraConfig(Section):
    name: str = key(
        Str(pattern=r"[a-z0-9][a-z0-9_-]{0,31}",
            described="1 to 32 characters: lowercase letters, digits, '_' and '-', "
                      "starting with a letter or digit"),
        "Name in URLs (/cameras/<name>/) and metrics; unique.",
        default_text="cam0, cam1, ... by position", example="cam0")
    source: str = key(
        Choice(tuple(SOURCE_OPTIONS)),
        "Where frames come from. \"picamera2\": a Raspberry Pi camera; "
        "\"testpattern\": a generated pattern (no camera needed); \"file\": an "
        "encoded file replayed at its frame rate.",
        example="picamera2")
    # Bounds. At least 64 wide: the test pattern's block code is 32 cells of
    # at least 2 px across, and a narrower picture is no use to watch; at
    # least 16 high, one macroblock. At most 4096x2304: the largest 16:9
    # picture within 36,864 macroblocks, the largest frame of H.264 levels 5.1
    # and 5.2 (ITU-T H.264 Table A-1); with both sides bounded every allowed
    # size fits, so none needs an 8K level (6 and above). VP8 would allow
    # 16,383 a side. Cameras may do less: the Pi 4's hardware H.264 encoder
    # stops at 1920x1080.
    width: int = key(
        Int(64, 4096, even=True),
        "Frame width in pixels. Even, because H.264 4:2:0 halves the chroma "
        "planes. 720p because the Pi 4 hardware encoder does 720p at ~68 fps "
        "in total but 1080p only at 30.",
        1280)
    height: int = key(Int(16, 2304, even=True), "Frame height in pixels (even).", 720)
    # Bounds: at least a frame a second; at most the fastest Pi camera mode.
    fps: int = key(
        Int(1, 120),
        "Frames per second. Up to 120, the fastest Pi camera mode; high rates "
        "cut latency (a frame is 33 ms at 30 fps) but cost encoder time.",
        30)
    codec: str = key(
        Choice(("h264", "vp8")),
        "Video codec. H.264: the Pi encodes it in hardware and every browser "
        "decodes it. VP8 only for testpattern and file sources: no Raspberry "
        "Pi has a VP8 hardware encoder.",
        "h264")
    # Bounds: 50 kbit/s is about what 3G video calls gave their QCIF (176x144)
    # picture, still legible, for a Pi on a slow or metered link; below it even
    # a small picture is mush. 50 Mbit/s is the H.264 level 4.2 maximum for
    # Baseline/Main (ITU-T H.264 Table A-1), twice what the Pi's hardware
    # encoder takes (25 Mbit/s).
    bitrate: int = key(
        Bitrate(50_000, 50_000_000),
        "Target bits per second of the encoder. Each viewer costs this much "
        "uplink; 4M gives clean 720p30 and leaves room on Wi-Fi.",
        4_000_000)
    # Bounds: under 0.1 s nearly every frame is a keyframe. Beyond 60 s the
    # saving is under 0.5 % of the stream (one keyframe of up to 10 delta
    # frames' size in 1800 frames at 30 fps), while a lost keyframe request
    # would leave a picture broken for more than a minute.
    keyframe_interval: float = key(
        Seconds(0.1, 60),
        "Seconds between keyframes even when no viewer asks for one. A "
        "keyframe is 5-10x a delta frame; every 2 s bounds how long a picture "
        "stays broken if a keyframe request is lost.",
        2.0)
    fec: str = key(
        Choice(("auto", "off", "ulpfec", "flexfec")),
        "Forward error correction, so a lost packet is repaired without a round "
        "trip (Wi-Fi, long links). \"auto\": FlexFEC-03 for H.264 where the "
        "browser offers it (Chrome), RED+ULPFEC for VP8 (Chrome, Firefox), none "
        "otherwise; \"ulpfec\" / \"flexfec\": only that scheme; \"off\": none.",
        "auto")
    fec_rate: Any = key(
        ProtectionRate(),
        "FEC packets as a percentage of media packets, or \"adaptive\": raised "
        "and lowered from the loss the viewers report (RTCP receiver reports).",
        "adaptive")
    # Bounds: one frame is the least delay; beyond 10 frames (a third of a
    # second at 30 fps) a repair comes too late to be shown.
    fec_max_frames: int = key(
        Int(1, 10),
        "Most frames one FEC group spans. 1: every frame's FEC follows it at "
        "once. Grouping small frames costs less overhead, but Chrome does not "
        "wait for late repairs: a repair a few frames late comes after the "
        "picture froze.",
        1)
    retransmit: bool = key(
        Bool(),
        "Answer the viewers' NACKs with retransmissions (RTX where negotiated).",
        True)
    # Bounds: under 0.5 s a busy Pi's scheduling pauses would count as stalls;
    # beyond 10 minutes a dead camera would go unnoticed for too long.
    stall_timeout: float | None = key(
        Seconds(0.5, 600),
        "Seconds without a usable frame after which the camera counts as "
        "stalled and its source is restarted (viewers stay connected and resume "
        "at the next keyframe).",
        None, default_text="the largest of 2 s, 5 frame intervals and keyframe_interval",
        example=5.0)
    record: RecordConfig = key(Table(RecordConfig), "Recording to disk (see below).",
                               RecordConfig())
    forward: tuple[ForwardConfig, ...] = key(
        ListOf(Table(ForwardConfig)), "Forwards to SFUs (see below).", ())
    options: Any = key(
        SourceOptions(),
        "Options of the camera's source, as a table (see below).",
        None, default_text="the source's defaults")
    # Not keys (schema() skips them). `placeholder`: this is the camera of a
    # config without [[camera]] tables, a test pattern until the layer that
    # starts cameras, which knows this machine, makes it the Pi camera where
    # picamera2 finds one (rpistream.sources.choose_default_camera).
    # `fallback_reason`: why it stayed a test pattern, said wherever it shows.
    placeholder: bool = dataclasses.field(default=False, compare=False)
    fallback_reason: str | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self):
        if self.options is None:  # e.g. CameraConfig(name="cam0", source="testpattern")
            object.__setattr__(self, "options", SOURCE_OPTIONS[self.source]())

    @staticmethod
    def problems(values):
        if values.get("source") == "picamera2" and values.get("codec", "h264") != "h264":
            yield "codec", ("picamera2 cameras can only use \"h264\": no Raspberry Pi "
                            "has a VP8 hardware encoder")
        options = values.get("options")
        if values.get("source") == "file" and options is not None:
            codec, holds = values.get("codec", "h264"), file_codec(options.path)
            if codec != holds:
                yield "options", (f"the file's extension says it holds {holds}, but the "
                                  f"camera's codec is \"{codec}\": set codec = \"{holds}\"")


@dataclass(frozen=True, kw_only=True)
class LimitsConfig(Section):
    # Upper bounds of the viewer counts are sanity checks, far past what one
    # Pi's uplink carries; see docs/DESIGN.md §9 for scaling past one board.
    max_viewers: int = key(
        Int(1, 1000),
        "Viewers of all cameras together. Each costs SRTP encryption (the Pi 4 "
        "has no AES instructions) and a bitrate of uplink: 50 x 4 Mbit/s "
        "already exceeds Wi-Fi.",
        50)
    max_viewers_per_camera: int = key(
        Int(1, 1000),
        "Viewers of any one camera. 20 x 4 Mbit/s = 80 Mbit/s, about what a "
        "Pi's Wi-Fi carries.",
        20)
    # At most 30: a second of video at 30 fps. Deeper queues are the unbounded
    # latency and memory growth rpistream exists to avoid (docs/DESIGN.md §1).
    viewer_queue_frames: int = key(
        Int(1, 30),
        "Frames a viewer may have waiting to be sent. Small on purpose: every "
        "waiting frame is latency (33 ms at 30 fps) and memory. A viewer that "
        "falls further behind skips to the next keyframe instead of queuing. "
        "3: one being sent, one waiting, one spare for network jitter.",
        3)
    slow_viewer_timeout: float = key(
        Seconds(0.5, 300),
        "Seconds a viewer may stay behind (skipping frames) before it is "
        "disconnected, freeing its slot and the server's work for it. 10 "
        "rides out a Wi-Fi roam or a short outage.",
        10.0)
    ice_timeout: float = key(
        Seconds(1, 120),
        "Seconds a peer has to complete ICE; peers that never do (a tab "
        "closed mid-connect, UDP blocked) are reaped so they cannot hold a "
        "viewer slot. 20 leaves time for TURN over slow links.",
        20.0)
    # 1 KiB is below any real offer; 1 MiB is already absurd for SDP.
    max_body_bytes: int = key(
        Int(1024, 1048576),
        "Largest WHEP offer (SDP) accepted, in bytes. Browser offers are "
        "5-10 KB; 64 KiB leaves room while stopping a client from making "
        "the server buffer megabytes.",
        65536)
    # Under 0.05 s (every frame or two at 30 fps) it would no longer limit anything.
    keyframe_min_interval: float = key(
        Seconds(0.05, 10),
        "Seconds between keyframes made on request (PLI/FIR), across all "
        "viewers of a camera: a keyframe costs 5-10x a delta frame, so "
        "joining or lossy viewers must not turn the stream into keyframes.",
        0.5)
    # A client's new WHEP sessions: a token bucket per address (an IPv6 /64).
    offer_burst: int = key(
        Int(1, 1000),
        "New WHEP sessions one client address may start at once. Each costs the "
        "Pi a peer connection, a DTLS certificate and ICE gathering. 10 covers a "
        "page of 8 cameras opened, or reloaded, at once; past it the client gets "
        "429 with Retry-After.",
        10)
    offers_per_minute: int = key(
        Int(1, 6000),
        "New WHEP sessions a client address may start per minute after the "
        "burst. 60 (one a second) is more than a viewer page reconnecting with "
        "backoff ever asks, and little enough that one client cannot keep the "
        "Pi busy negotiating.",
        60)


@dataclass(frozen=True, kw_only=True)
class MonitorConfig(Section):
    # Under 5 s the slope is allocator noise and the hour's window holds 721
    # samples; over 10 min it holds too few to fit, and critical memory would
    # be noticed minutes late.
    sample_interval: float = key(
        Seconds(5, 600),
        "Seconds between two readings of the server's memory (RSS). Each is a "
        "read of /proc; the last hour of them is kept to fit the growth rate.",
        30.0)
    # MB here are MiB, as in systemd's MemoryMax=512M. The bounds are sanity
    # checks: 64 is under what importing aiortc and aiohttp alone takes,
    # 16384 is the largest Pi's memory.
    warn_rss_mb: int = key(
        Int(64, 16384),
        "RSS in MB (MiB) at which the log warns, with the growth rate and the "
        "biggest buffers. A viewer costs under 1 MB (README: Memory over an hour), so 320 "
        "leaves room for 50 viewers over a streaming server and the camera "
        "stack's own buffers: past it, something holds what it should not.",
        320)
    critical_rss_mb: int = key(
        Int(64, 16384),
        "RSS in MB (MiB) at which the server sheds load: every viewer drops its "
        "queued frames and skips to the next keyframe, then the slowest viewers "
        "are disconnected until RSS is under warn_rss_mb. 448 leaves 64 MB under "
        "the service's MemoryMax=512M for the shedding itself, and half of a "
        "1 GB Pi for the system and the camera's buffers. On a 512 MB Pi Zero 2 "
        "lower both thresholds and MemoryMax.",
        448)
    # 0.1 MB/h is under what an hour of samples can tell from allocator noise;
    # 1000 MB/h would reach critical before an hour had passed.
    leak_slope_mb_per_h: float = key(
        Number(0.1, 1000, unit="MB per hour"),
        "RSS growth, fitted over the last hour, above which a leak is suspected "
        "(logged once, with the rate) when both halves of the hour grew that "
        "fast. 2 is twice what the soak benchmark allows a healthy server "
        "(bench/soak.py), and 48 MB a day: critical within a week.",
        2.0)
    # Bounds: at least 10 s, so the restarts in the process (the first within a
    # second, docs/DESIGN.md §4) get a chance first; at most a day.
    exit_after_camera_down: float | None = key(
        Seconds(10, 86400),
        "Exit with status 3 once any camera has not been live for this many "
        "seconds, so that systemd (Restart=on-failure) starts a new process: "
        "for a camera stack only a new process brings back (libcamera "
        "sometimes needs one). Not set: cameras are restarted in the process "
        "forever, because a camera unplugged for a week should not cut every "
        "other camera's viewers off again and again.",
        None, example=300.0)
    debug_api: bool = key(
        Bool(),
        "Serve GET /api/debug/tracemalloc: the allocation sites that grew since "
        "the previous call. Tracing slows every allocation and costs memory "
        "while on, so it is for hunting a leak, not for normal service.",
        False)

    @staticmethod
    def problems(values):
        warn = values.get("warn_rss_mb", MonitorConfig.warn_rss_mb)  # given, or the default
        critical = values.get("critical_rss_mb", MonitorConfig.critical_rss_mb)
        if critical <= warn and "critical_rss_mb" in values:
            yield "critical_rss_mb", f"must be above warn_rss_mb ({warn})"
        elif critical <= warn and "warn_rss_mb" in values:
            yield "warn_rss_mb", f"must be below critical_rss_mb ({critical}, its default)"


@dataclass(frozen=True)
class Cameras(ValueType):
    """The [[camera]] array: 1 to `most` cameras with unique names."""

    most: int

    allowed = "an array of tables ([[camera]] sections)"

    def parse(self, value, path, walk, siblings):
        if type(value) is not list or not 1 <= len(value) <= self.most:
            walk.error(f"{path} = {show(value)}: must be 1 to {self.most} [[camera]] tables "
                       f"(leave them all out for the Pi camera, or a test pattern without one)")
            return INVALID
        cameras = []
        seen: dict[str, str] = {}
        targets: dict[str, str] = {}  # where each forward sends, and which forward
        for i, item in enumerate(value):
            item_path = f"{path}[{i}]"
            named = type(item) is not dict or "name" in item
            if not named:
                item = {"name": f"cam{i}", **item}
            cam = Table(CameraConfig).parse(item, item_path, walk, {})
            cameras.append(cam)
            if cam is not INVALID:
                if cam.name in seen:
                    walk.error(f"{item_path}.name = {show(cam.name)}: already used by "
                               f"{seen[cam.name]}; camera names must be unique (they are "
                               f"part of the URL /cameras/<name>/)" + ("" if named else
                               f"; this is the default name of the camera at position {i}: "
                               f"give it a name"))
                seen.setdefault(cam.name, item_path)
                for j, forward in enumerate(cam.forward):
                    if forward.target in targets:
                        # Two streams in one RTP port or one WHIP stream: the
                        # SFU would mix them, or take one and refuse the other.
                        walk.error(f"{item_path}.forward[{j}]: sends to {forward.target} as "
                                   f"{targets[forward.target]} does; each forward needs a "
                                   f"target of its own (an RTP port, a WHIP URL)")
                    targets.setdefault(forward.target, f"{item_path}.forward[{j}]")
        return INVALID if INVALID in cameras else tuple(cameras)


@dataclass(frozen=True, kw_only=True)
class Config(Section):
    server: ServerConfig = key(Table(ServerConfig), "HTTP and WebRTC.", ServerConfig())
    # At most 8: more than a board has camera ports, and the shared encoder
    # runs out long before (1080p30 in total on a Pi 4).
    cameras: tuple[CameraConfig, ...] = key(
        Cameras(8),
        "Cameras, 1 to 8, each a [[camera]] table. None given: the Pi camera "
        "if picamera2 finds one, else a test pattern, so a fresh install "
        "shows a picture with or without a camera.",
        (CameraConfig(name="cam0", source="testpattern", placeholder=True),), toml="camera")
    limits: LimitsConfig = key(Table(LimitsConfig), "Bounds on viewers and buffers.",
                               LimitsConfig())
    monitor: MonitorConfig = key(Table(MonitorConfig),
                                 "Memory watch, load shedding and debugging.", MonitorConfig())
