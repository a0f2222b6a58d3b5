"""The one config loader: TOML file + command-line overrides -> frozen `Config`.

The schema is the dataclasses below: each field's metadata holds its type
(which validates, converts and describes what is allowed), its help text and
its default. Validation, error messages, `--camera` parsing and
config.example.toml (`python -m rpistream.config > config.example.toml`) are
all derived from them, so a key is described in exactly one place.

Every problem is collected before anything is raised: a `ConfigError` lists
them all, one per line, each naming the key path (`camera[1].fps`), the bad
value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import os
import re
import textwrap
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any, Iterator, Mapping

DEFAULT_CONFIG_PATH = "/etc/rpistream/config.toml"


class ConfigError(Exception):
    """The configuration is unusable; `errors` holds one line per problem."""

    def __init__(self, source: str, errors: list[str] | tuple[str, ...]):
        self.source = source
        self.errors = tuple(errors)
        super().__init__(f"error in {source}:\n" + "\n".join(f"  {e}" for e in self.errors))


# ── value types ──────────────────────────────────────────────────────────────
# Each type knows what it accepts (`allowed`, used in every message and in the
# example file), how to check and convert a parsed TOML value, and how to read
# the same value from command-line text.

_INVALID = object()  # a value that already produced an error


class _Type:
    allowed = "?"

    def convert(self, value: Any) -> Any:
        """The checked value; raise ValueError if it is not allowed."""
        raise NotImplementedError

    def parse(self, value: Any, path: str, walk: _Walk, siblings: dict) -> Any:
        try:
            return self.convert(value)
        except ValueError:
            walk.error(f"{path} = {show(value)}: must be {self.allowed}")
            return _INVALID

    def from_text(self, text: str) -> Any:
        return text

    def toml(self, value: Any) -> str:
        return toml_value(value)


@dataclass(frozen=True)
class Int(_Type):
    lo: int
    hi: int
    even: bool = False

    @property
    def allowed(self) -> str:
        return f"{'an even' if self.even else 'an'} integer from {self.lo} to {self.hi}"

    def convert(self, value):
        # type() rather than isinstance(): bool is an int subclass, and
        # `fps = true` is a mistake, not 1.
        if type(value) is int and self.lo <= value <= self.hi and not (self.even and value % 2):
            return value
        raise ValueError

    def from_text(self, text):
        try:
            return int(text)
        except ValueError:  # not a number, or too many digits: validation says so
            return text


@dataclass(frozen=True)
class Seconds(_Type):
    lo: float
    hi: float

    @property
    def allowed(self) -> str:
        return f"a number of seconds from {self.lo:g} to {self.hi:g}"

    def convert(self, value):
        # NaN fails the range test, so it needs no case of its own.
        if type(value) in (int, float) and self.lo <= value <= self.hi:
            return float(value)
        raise ValueError

    def from_text(self, text):
        try:
            return float(text)
        except ValueError:
            return text


@dataclass(frozen=True)
class Number(Seconds):
    """A number in another unit than seconds."""

    unit: str = ""

    @property
    def allowed(self) -> str:
        return f"a number of {self.unit} from {self.lo:g} to {self.hi:g}"


_SI = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}


@dataclass(frozen=True)
class Bitrate(_Type):
    lo: int
    hi: int

    @property
    def allowed(self) -> str:
        return (f"bits per second from {self.lo} to {self.hi}: an integer, "
                f'or a string like "800k" or "4M"')

    def convert(self, value):
        if type(value) is str:
            m = re.fullmatch(r"\s*(\d{1,12}(?:\.\d{1,12})?)\s*([kKmMgG]?)\s*", value)
            if not m:
                raise ValueError
            value = round(float(m[1]) * _SI[m[2].lower()])  # finite: at most 12 digits
        if type(value) is int and self.lo <= value <= self.hi:
            return value
        raise ValueError

    def from_text(self, text):
        return Int(self.lo, self.hi).from_text(text)

    def toml(self, value):
        return f"{value:_}"  # 4_000_000: a valid TOML integer that reads at a glance


@dataclass(frozen=True)
class Bool(_Type):
    allowed = "true or false"

    def convert(self, value):
        if type(value) is bool:
            return value
        raise ValueError

    def from_text(self, text):
        return {"true": True, "yes": True, "1": True,
                "false": False, "no": False, "0": False}.get(text.strip().lower(), text)


@dataclass(frozen=True)
class Choice(_Type):
    values: tuple[str, ...]

    @property
    def allowed(self) -> str:
        return "one of " + ", ".join(json.dumps(v) for v in self.values)

    def convert(self, value):
        if type(value) is str and value in self.values:
            return value
        raise ValueError


@dataclass(frozen=True)
class ProtectionRate(_Type):
    """FEC protection: "adaptive", or a fixed percentage of the media packets."""

    allowed = '"adaptive" or a percentage from 1 to 100'

    def convert(self, value):
        if value == "adaptive" or (type(value) in (int, float) and 1 <= value <= 100):
            return value if value == "adaptive" else float(value)
        raise ValueError

    def from_text(self, text):
        try:
            return float(text)
        except ValueError:
            return text


@dataclass(frozen=True)
class Str(_Type):
    pattern: str | None = None
    min_len: int = 1
    described: str | None = None  # what `pattern` means, in words

    @property
    def allowed(self) -> str:
        if self.described:
            return self.described
        return "a non-empty string" if self.min_len == 1 else f"a string of at least {self.min_len} characters"

    def convert(self, value):
        if (type(value) is str and len(value) >= self.min_len
                and (self.pattern is None or re.fullmatch(self.pattern, value))):
            return value
        raise ValueError


@dataclass(frozen=True)
class IpAddress(_Type):
    allowed = 'an IP address such as "192.168.1.20" or "fd00::20"'

    def convert(self, value):
        if type(value) is str:
            return str(ipaddress.ip_address(value))  # ValueError if not an address
        raise ValueError


@dataclass(frozen=True)
class IceUrls(_Type):
    # RFC 7064 (stun:, stuns:) and RFC 7065 (turn:, turns:) URI schemes.
    allowed = ('a STUN or TURN URL starting with "stun:", "stuns:", "turn:" or '
               '"turns:", or a non-empty array of them')

    def convert(self, value):
        urls = [value] if type(value) is str else value
        if (type(urls) is list and urls
                and all(type(u) is str and re.match(r"(stuns?|turns?):.", u) for u in urls)):
            return tuple(urls)
        raise ValueError


@dataclass(frozen=True)
class ListOf(_Type):
    item: _Type

    @property
    def allowed(self) -> str:
        return f"an array, each item {self.item.allowed}"

    def parse(self, value, path, walk, siblings):
        if type(value) is not list:
            walk.error(f"{path} = {show(value)}: must be {self.allowed}")
            return _INVALID
        items = [self.item.parse(v, f"{path}[{i}]", walk, {}) for i, v in enumerate(value)]
        return _INVALID if _INVALID in items else tuple(items)

    def toml(self, value):
        items = [self.item.toml(v) for v in value]
        if sum(map(len, items)) < 50:
            return "[" + ", ".join(items) + "]"
        return "[\n" + "".join(f"#    {v},\n" for v in items) + "#]"  # TOML arrays may span lines


@dataclass(frozen=True)
class Table(_Type):
    """A TOML table read into the dataclass `cls`, whose fields are the schema."""

    cls: type

    @property
    def allowed(self) -> str:
        return "a table with keys " + ", ".join(schema(self.cls))

    def parse(self, value, path, walk, siblings):
        if type(value) is not dict:
            walk.error(f"{path} = {show(value)}: must be a table")
            return _INVALID
        keys = schema(self.cls)
        for k in value:
            if k not in keys:
                walk.unknown_key(walk.join(path, k), str(k), keys, self.cls.__doc__)
        values = {}
        for name, f in keys.items():
            key_path = walk.join(path, name)
            if name in value:
                values[f.name] = f.metadata["type"].parse(value[name], key_path, walk, values)
            elif _default(f) is _REQUIRED:
                walk.error(f"{key_path}: missing; must be {f.metadata['type'].allowed}")
                values[f.name] = _INVALID
            elif isinstance(f.metadata["type"], SourceOptions):  # its default depends on `source`
                values[f.name] = f.metadata["type"].parse({}, key_path, walk, values)
        valid = {k: v for k, v in values.items() if v is not _INVALID}
        for key, message in self.cls.problems(valid):
            walk.error(f"{walk.join(path, key)} = {show(valid[key])}: {message}")
        if len(valid) < len(values):
            return _INVALID
        return self.cls(**valid)


class SourceOptions(_Type):
    """`options`: a table whose keys depend on the camera's `source`."""

    allowed = "a table of options for the camera's source"

    def parse(self, value, path, walk, siblings):
        source = siblings.get("source", _INVALID)
        if source is _INVALID:  # already reported; the options cannot be judged
            return _INVALID
        return Table(SOURCE_OPTIONS[source]).parse(value, path, walk, siblings)


@dataclass(frozen=True)
class Cameras(_Type):
    """The [[camera]] array: 1 to `most` cameras with unique names."""

    most: int

    allowed = "an array of tables ([[camera]] sections)"

    def parse(self, value, path, walk, siblings):
        if type(value) is not list or not 1 <= len(value) <= self.most:
            walk.error(f"{path} = {show(value)}: must be 1 to {self.most} [[camera]] "
                       f"tables (leave them all out for one test-pattern camera)")
            return _INVALID
        cameras = []
        seen: dict[str, str] = {}
        for i, item in enumerate(value):
            item_path = f"{path}[{i}]"
            named = type(item) is not dict or "name" in item
            if not named:
                item = {"name": f"cam{i}", **item}
            cam = Table(CameraConfig).parse(item, item_path, walk, {})
            cameras.append(cam)
            if cam is not _INVALID:
                if cam.name in seen:
                    walk.error(f"{item_path}.name = {show(cam.name)}: already used by "
                               f"{seen[cam.name]}; camera names must be unique (they are "
                               f"part of the URL /cameras/<name>/)" + ("" if named else
                               f"; this is the default name of the camera at position {i}: "
                               f"give it a name"))
                seen.setdefault(cam.name, item_path)
        return _INVALID if _INVALID in cameras else tuple(cameras)


# ── the schema ───────────────────────────────────────────────────────────────

_REQUIRED = dataclasses.MISSING


def key(type_: _Type, help: str, default: Any = _REQUIRED, *, toml: str | None = None,
        example: Any = _REQUIRED, default_text: str | None = None) -> Any:
    """A schema entry: a dataclass field whose metadata says how to read it.

    `toml` is the key's name in the file when it differs from the attribute;
    `example` is shown in config.example.toml when there is no default to
    show; `default_text` describes a default that is not a plain value.
    """
    meta = {"type": type_, "help": help, "toml": toml, "example": example,
            "default_text": default_text}
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable default")  # frozen config: use a tuple
    if default is _REQUIRED:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


def _default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else _REQUIRED


class _Section:
    """Cross-key checks, run on the keys that passed their own checks."""

    @staticmethod
    def problems(values: dict) -> Iterator[tuple[str, str]]:
        return iter(())


@dataclass(frozen=True, kw_only=True)
class IceServer(_Section):
    urls: tuple[str, ...] = key(IceUrls(), "Server URL(s), e.g. \"stun:stun.example.org:3478\".")
    username: str | None = key(Str(), "User name (TURN only).", None)
    credential: str | None = key(Str(), "Password (TURN only).", None)

    @staticmethod
    def problems(values):
        # RFC 8656 §9.2: TURN allocations are authenticated; STUN binding is not.
        if (any(u.startswith("turn") for u in values.get("urls", ()))
                and (values.get("username") is None or values.get("credential") is None)):
            yield "urls", "TURN servers need both username and credential"


@dataclass(frozen=True, kw_only=True)
class ServerConfig(_Section):
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
        "STUN and TURN servers, for viewers outside this network. Each is "
        "{ urls = \"stun:...\" | \"turn:...\" | [...], username = \"...\", "
        "credential = \"...\" }; TURN needs username and credential. Empty: on "
        "a LAN host candidates are enough, and a default public STUN server "
        "would make every connection depend on the internet.",
        (), example=(IceServer(urls=("stun:stun.example.org:3478",)),
                     IceServer(urls=("turn:turn.example.org:3478",),
                               username="pi", credential="secret")))
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
class TestpatternOptions(_Section):
    """The test pattern takes no options."""  # shown in messages and the example

    __test__ = False  # not a pytest test class, despite its name


@dataclass(frozen=True, kw_only=True)
class Picamera2Options(_Section):
    # libcamera numbers cameras from 0; 15 is far above any board's connectors.
    camera_num: int = key(Int(0, 15), "Which camera, as numbered by libcamera (0 is the first).", 0)
    hflip: bool = key(Bool(), "Mirror the image left to right.", False)
    vflip: bool = key(Bool(), "Flip the image upside down.", False)


@dataclass(frozen=True, kw_only=True)
class FileOptions(_Section):
    path: str = key(Str(described="the path of an Annex-B .h264 or .ivf file"),
                    "The encoded file to replay, in the camera's codec.",
                    example="/var/lib/rpistream/clip.h264")
    loop: bool = key(Bool(), "Start again at the end of the file.", True)


# `source` kind -> its options. The keys are the allowed `source` values.
SOURCE_OPTIONS: dict[str, type] = {
    "testpattern": TestpatternOptions,
    "picamera2": Picamera2Options,
    "file": FileOptions,
}


@dataclass(frozen=True, kw_only=True)
class CameraConfig(_Section):
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
    # Bounds: 16 is one macroblock; 3840x2160 (4K) is the most any encoder here
    # is asked for (the Pi's hardware H.264 stops at 1920x1080).
    width: int = key(
        Int(16, 3840, even=True),
        "Frame width in pixels. Even, because H.264 4:2:0 halves the chroma "
        "planes. 720p because the Pi 4 hardware encoder does 720p at ~68 fps "
        "in total but 1080p only at 30.",
        1280)
    height: int = key(Int(16, 2160, even=True), "Frame height in pixels (even).", 720)
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
    # Bounds: under 100 kbit/s even a small picture is mush; 50 Mbit/s is the
    # H.264 level 4.2 maximum for Baseline/Main (ITU-T H.264 Table A-1).
    bitrate: int = key(
        Bitrate(100_000, 50_000_000),
        "Target bits per second of the encoder. Each viewer costs this much "
        "uplink; 4M gives clean 720p30 and leaves room on Wi-Fi.",
        4_000_000)
    # Bounds: under 0.1 s nearly every frame is a keyframe; over 60 s a lost
    # keyframe request leaves a picture broken for a minute.
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
        "wait for late repairs: at 10 % loss, H.264 without NACK played at "
        "30 fps with 1 and froze with 3.",
        1)
    retransmit: bool = key(
        Bool(),
        "Answer the viewers' NACKs with retransmissions (RTX where negotiated).",
        True)
    options: Any = key(
        SourceOptions(),
        "Options of the camera's source, as a table (see below).",
        None, default_text="the source's defaults")
    # Not a key (schema() skips it): why a test pattern stands in for the Pi
    # camera a config without cameras gets, said wherever the camera shows.
    fallback_reason: str | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self):
        if self.options is None:  # e.g. CameraConfig(name="cam0", source="testpattern")
            object.__setattr__(self, "options", SOURCE_OPTIONS[self.source]())

    @staticmethod
    def problems(values):
        if values.get("source") == "picamera2" and values.get("codec", "h264") != "h264":
            yield "codec", ("picamera2 cameras can only use \"h264\": no Raspberry Pi "
                            "has a VP8 hardware encoder")


@dataclass(frozen=True, kw_only=True)
class LimitsConfig(_Section):
    # Upper bounds of the viewer counts are sanity checks, far past what one
    # Pi's uplink carries; see DESIGN.md §6 for scaling past one board.
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
    # latency and memory growth rpistream exists to avoid (DESIGN.md §1).
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
class MonitorConfig(_Section):
    # Under 5 s the slope is allocator noise and the hour's window holds 721
    # samples; over 10 min it holds too few to fit, and critical memory would
    # be noticed minutes late.
    sample_interval: float = key(
        Seconds(5, 600),
        "Seconds between two readings of the server's memory (RSS). Each is a "
        "read of /proc; the last hour of them is kept to fit the growth rate.",
        30.0)
    # MB here are MiB, as in systemd's MemoryMax=512M. The bounds are sanity
    # checks: 64 is under the ~75 MB that importing aiortc and aiohttp takes,
    # 16384 is the largest Pi's memory.
    warn_rss_mb: int = key(
        Int(64, 16384),
        "RSS in MB (MiB) at which the log warns, with the growth rate and the "
        "biggest buffers. Measured: 114 MB streaming 720p with no viewer, 127 "
        "with 20 (under 1 MB each), so 320 leaves room for 50 viewers and the "
        "camera stack's own buffers: past it, something holds what it should not.",
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
        "(bench/soak.py), and 48 MB a day: from 114 MB, critical within a week.",
        2.0)
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


@dataclass(frozen=True, kw_only=True)
class Config(_Section):
    server: ServerConfig = key(Table(ServerConfig), "HTTP and WebRTC.", ServerConfig())
    # At most 8: more than a board has camera ports, and the shared encoder
    # runs out long before (1080p30 in total on a Pi 4).
    cameras: tuple[CameraConfig, ...] = key(
        Cameras(8),
        "Cameras, 1 to 8, each a [[camera]] table. None given: the Pi camera "
        "if picamera2 finds one, else a test pattern, so a fresh install "
        "shows a picture with or without a camera.",
        (CameraConfig(name="cam0", source="testpattern"),), toml="camera")
    limits: LimitsConfig = key(Table(LimitsConfig), "Bounds on viewers and buffers.",
                               LimitsConfig())
    monitor: MonitorConfig = key(Table(MonitorConfig),
                                 "Memory watch, load shedding and debugging.", MonitorConfig())


def schema(cls: type) -> dict[str, dataclasses.Field]:
    """TOML key -> dataclass field of `cls`."""
    return {f.metadata["toml"] or f.name: f for f in dataclasses.fields(cls) if f.metadata}


# ── loading ──────────────────────────────────────────────────────────────────


class _Walk:
    """Error collector; `labels` renames key paths given on the command line."""

    def __init__(self, labels: Mapping[str, str]):
        self.errors: list[str] = []
        self.labels = labels

    def join(self, path: str, key: Any) -> str:
        key = str(key)
        if not re.fullmatch(r"[A-Za-z0-9_-]+", key):  # TOML: such keys must be quoted
            key = json.dumps(key, ensure_ascii=False)
        joined = f"{path}.{key}" if path else key
        return self.labels.get(joined, joined)

    def error(self, message: str) -> None:
        self.errors.append(message)

    def unknown_key(self, path: str, key: str, allowed: Mapping[str, Any], doc: str) -> None:
        if not allowed:  # e.g. testpattern options; the class doc says why
            self.error(f"{path}: unknown key; {doc.strip()}")
            return
        close = difflib.get_close_matches(key, list(allowed), n=1)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        self.error(f"{path}: unknown key{hint}; allowed keys: {', '.join(allowed)}")


def parse_config(data: dict, source: str = "<config>", *,
                 labels: Mapping[str, str] | None = None) -> Config:
    """Validate parsed TOML `data` into a `Config`, or raise a `ConfigError`
    listing every problem. `labels` maps key paths to the names the user
    typed them as, e.g. {"camera": "--camera", "server.port": "--port"}."""
    walk = _Walk(labels or {})
    config = Table(Config).parse(data, "", walk, {})
    if walk.errors:
        raise ConfigError(source, walk.errors)
    if "camera" not in data:
        config = dataclasses.replace(config, cameras=(default_camera(),))
    return config


def default_camera() -> CameraConfig:
    """The camera of a config that names none: the Pi camera where picamera2
    finds one, else a test pattern that carries the reason."""
    from rpistream.sources import picamera2_status  # PyAV and, if present, picamera2

    status = picamera2_status()
    if status.startswith("ok"):
        return CameraConfig(name="cam0", source="picamera2", options=Picamera2Options())
    return CameraConfig(name="cam0", source="testpattern",
                        fallback_reason="no camera is configured and " + status.removeprefix(
                            "unavailable: "))


def resolve_config_path(path: str | None) -> str | None:
    """The file to read: `path`, else DEFAULT_CONFIG_PATH if it exists, else
    None (built-in defaults)."""
    if path is not None:
        return path
    return DEFAULT_CONFIG_PATH if os.path.exists(DEFAULT_CONFIG_PATH) else None


def read_toml(path: str) -> dict:
    """The parsed file, or a ConfigError naming the file, line and column."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(path, ["no such file"]) from None
    except OSError as e:
        raise ConfigError(path, [f"cannot read it: {e.strerror}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError(path, [f"line {line}: not UTF-8 text, as TOML requires"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # Python 3.11's TOMLDecodeError has no lineno/colno attributes: the
        # position is only in the message, as "(at line L, column C)".
        message = str(e)
        m = re.search(r" \(at line (\d+), column (\d+)\)$", message)
        if m:
            line, col, message = m[1], m[2], message[:m.start()]
        else:
            message = message.replace(" (at end of document)", "")
            lines = text.split("\n")
            line, col = len(lines), len(lines[-1]) + 1
        raise ConfigError(path, [f"line {line}, column {col}: invalid TOML: {message}"]) from None


def merge(base: dict, overrides: Mapping) -> dict:
    """`base` with `overrides` applied: tables merge key by key, anything else
    (arrays included: `--camera` replaces all cameras) is replaced."""
    out = dict(base)
    for k, v in overrides.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(path: str | None = None, overrides: dict | None = None, *,
                labels: Mapping[str, str] | None = None) -> Config:
    """Read `path` (default: DEFAULT_CONFIG_PATH if it exists, else built-in
    defaults), apply `overrides` (same shape as the file; they win) and
    validate. Raises ConfigError."""
    path = resolve_config_path(path)
    data = read_toml(path) if path is not None else {}
    source = path or "the built-in defaults"
    if overrides:
        data = merge(data, overrides)
        source += " and the command line"
    config = parse_config(data, source, labels=labels)
    server = config.server
    if server.token is None and server.token_file is not None:
        config = dataclasses.replace(config, server=dataclasses.replace(
            server, token=read_token_file(server.token_file, source)))
    return config


def read_token_file(path: str, source: str) -> str:
    """The token in `path`, or a ConfigError saying what is wrong with the file."""
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as e:
        raise ConfigError(source, [f"server.token_file = {show(path, 200)}: cannot read "
                                   f"it: {e.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(source, [f"server.token_file = {show(path, 200)}: not UTF-8 "
                                   f"text"]) from None
    if len(token) < 16:
        raise ConfigError(source, [f"server.token_file = {show(path, 200)}: holds "
                                   f"{len(token)} characters; a token needs at least 16"])
    return token


def parse_camera_spec(spec: str) -> dict:
    """`--camera SOURCE[:key=value,...]` -> a [[camera]] table.

    Camera keys stay top-level, other keys go to `options`; each value is
    read as the schema's type for its key, and a value that does not read
    stays a string, so validation reports it like a bad value in the file.
    Values cannot contain commas. Raises ValueError for bad syntax.
    """
    source, _, rest = spec.partition(":")
    table: dict[str, Any] = {"source": source}
    options_type = SOURCE_OPTIONS.get(source)
    camera_keys = schema(CameraConfig)
    option_keys = schema(options_type) if options_type else {}
    for item in rest.split(",") if rest else ():
        k, eq, text = item.partition("=")
        k = k.strip()
        if not eq or not k:
            raise ValueError(f"{json.dumps(item)} is not key=value")
        if k in ("source", "options"):
            raise ValueError(f"{k} cannot be a key: write SOURCE[:key=value,...]")
        target = table if k in camera_keys else table.setdefault("options", {})
        if k in target:
            raise ValueError(f"{k} is given twice")
        f = camera_keys.get(k) or option_keys.get(k)
        target[k] = f.metadata["type"].from_text(text) if f else text
    return table


# ── rendering (messages and config.example.toml) ─────────────────────────────


def _items(value: Any) -> Iterator[tuple[str, Any]]:
    if dataclasses.is_dataclass(value):
        for k, f in schema(type(value)).items():
            v = getattr(value, f.name)
            if v is not None and v != _default(f):
                yield k, v
    else:
        yield from value.items()


def toml_value(value: Any) -> str:
    """`value` written as TOML (inline tables for tables)."""
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is int:
        return str(value)
    if type(value) is float:
        return repr(value) if math.isfinite(value) else ("nan" if value != value else
                                                         ("inf" if value > 0 else "-inf"))
    if type(value) is str:
        return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict) or dataclasses.is_dataclass(value):
        items = ", ".join(f"{k} = {toml_value(v)}" for k, v in _items(value))
        return "{ " + items + " }" if items else "{}"
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    return repr(value)


def show(value: Any, limit: int = 60) -> str:
    """A bad value as the user wrote it (TOML), shortened for a message."""
    try:
        text = toml_value(value)
    except Exception:  # e.g. an int too long for str(); a message must not fail
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _comment(text: str, width: int = 79) -> list[str]:
    return textwrap.wrap(text, width, initial_indent="# ", subsequent_indent="# ",
                         break_on_hyphens=False)


def _describe(f: dataclasses.Field, k: str) -> list[str]:
    """The comment block and commented-out assignment of one key."""
    meta = f.metadata
    default = _default(f)
    if meta["default_text"]:
        default_text = meta["default_text"]
    elif default is _REQUIRED:
        default_text = "none, required"
    elif default is None:
        default_text = "not set"
    elif default == ():
        default_text = "[] (none)"
    else:
        default_text = meta["type"].toml(default)
    lines = _comment(meta["help"])
    lines += _comment(f"Allowed: {meta['type'].allowed}. Default: {default_text}.")
    shown = meta["example"] if meta["example"] is not _REQUIRED else default
    if shown is not None and shown is not _REQUIRED:
        lines.append(f"#{k} = {meta['type'].toml(shown)}")
    return lines


def example_config() -> str:
    """config.example.toml: every key, commented out, with help, allowed
    values and default. Generated, so it cannot drift from the schema."""
    out = [
        "# rpistream configuration (TOML).",
        "#",
        *_comment(
            f"rpistream reads {DEFAULT_CONFIG_PATH}, or the file given with "
            "--config. Every key is shown commented out with its default, or an "
            "example where it has none; only a camera's source and a file camera's "
            "path are required. Unknown keys are errors, so a typo is reported "
            "rather than ignored. Check a file with `rpistream check --config "
            "FILE`. Generated from rpistream/config.py: "
            "python -m rpistream.config > config.example.toml"),
    ]
    for section_key, section in schema(Config).items():
        out += ["", ""]
        if section_key == "camera":
            # Uncommenting every line gives a valid config: a picamera2 camera
            # with every key, then one more camera per source with options.
            out += _comment(section.metadata["help"])
            out += _comment("Allowed: " + section.metadata["type"].allowed + ".")
            out += ["#", "#[[camera]]"]
            first = schema(CameraConfig)["source"].metadata["example"]
            for k, f in schema(CameraConfig).items():
                if k != "options":
                    out += ["#", *_describe(f, k)]
            out += ["#", *_comment(
                "Options of the camera's source go in a [camera.options] table after "
                "the camera's other keys; each source has its own:")]
            for source, cls in SOURCE_OPTIONS.items():
                keys = schema(cls)
                if not keys:
                    out += ["#", *_comment(f'source = "{source}": {cls.__doc__.strip()}')]
                    continue
                out += ["#", *_comment(f'source = "{source}":')]
                if source != first:
                    out += ["#[[camera]]", f'#name = "{source}"', f'#source = "{source}"']
                out += ["#[camera.options]"]
                for k, f in keys.items():
                    out += ["#", *_describe(f, k)]
        else:
            out += _comment(f"[{section_key}]: {section.metadata['help']}")
            out += ["#", f"#[{section_key}]"]
            for k, f in schema(section.metadata["type"].cls).items():
                out += ["#", *_describe(f, k)]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(example_config(), end="")
