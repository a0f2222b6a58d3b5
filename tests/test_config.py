import dataclasses
import json
import math
import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpistream.config import loader
from rpistream.config.example import example_config
from rpistream.config.loader import load_config, parse_config
from rpistream.config.schema import (SOURCE_OPTIONS, CameraConfig, Config, FileOptions,
                                     ForwardConfig,
                                     IceServer, LimitsConfig, MonitorConfig, Picamera2Options,
                                     RecordConfig, ServerConfig, TestpatternOptions)
from rpistream.config.values import Bitrate, Bool, Choice, ConfigError, Int, Seconds, schema

EXAMPLE = Path(__file__).parent.parent / "config.example.toml"


def error_of(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "test.toml")
    return str(info.value)


def cam(**keys) -> dict:
    return {"camera": [{"source": "testpattern", **keys}]}


@pytest.fixture
def no_default_file(monkeypatch, tmp_path):
    monkeypatch.setattr(loader, "DEFAULT_CONFIG_PATH", str(tmp_path / "absent.toml"))


# ── defaults ─────────────────────────────────────────────────────────────────


def test_defaults(no_default_file):
    config = load_config()
    assert config == parse_config({}) == Config()
    assert config.server.port == 8080 and config.server.host == "0.0.0.0"
    assert config.server.ice_servers == () and config.server.ice_hosts == ()
    assert config.server.token is None
    (camera,) = config.cameras
    assert (camera.name, camera.source, camera.width, camera.height, camera.fps, camera.codec,
            camera.bitrate, camera.keyframe_interval) == (
        "cam0", "testpattern", 1280, 720, 30, "h264", 4_000_000, 2.0)
    assert camera.options == TestpatternOptions()
    assert camera.placeholder  # the sources decide what it becomes (tests/test_sources.py)
    assert config.limits.viewer_queue_frames == 3 and config.limits.max_viewers == 50


def test_default_path_is_read_when_it_exists(monkeypatch, tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[server]\nport = 9000\n")
    monkeypatch.setattr(loader, "DEFAULT_CONFIG_PATH", str(path))
    assert load_config().server.port == 9000


def test_full_config_from_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("""
[server]
host = "127.0.0.1"
port = 8443
ice_hosts = ["127.0.0.1", "fd00::20"]
ice_servers = [{ urls = "stun:stun.example.org" },
               { urls = ["turn:t.example.org", "turns:t.example.org"], username = "u", credential = "p" }]
token = "0123456789abcdef"

[[camera]]
name = "front"
source = "picamera2"
width = 1920
height = 1080
bitrate = "8M"
keyframe_interval = 1
options = { camera_num = 1, vflip = true }

[[camera]]
source = "file"
codec = "vp8"
[camera.options]
path = "/tmp/a.ivf"
loop = false

[limits]
max_viewers = 10
slow_viewer_timeout = 2.5
""")
    config = load_config(str(path))
    assert config.server.ice_hosts == ("127.0.0.1", "fd00::20")
    assert config.server.ice_servers == (
        IceServer(urls=("stun:stun.example.org",)),
        IceServer(urls=("turn:t.example.org", "turns:t.example.org"), username="u",
                  credential="p"))
    front, second = config.cameras
    assert front.bitrate == 8_000_000 and front.keyframe_interval == 1.0
    assert front.options == Picamera2Options(camera_num=1, vflip=True)
    assert second.name == "cam1"  # default name by position
    assert second.options == FileOptions(path="/tmp/a.ivf", loop=False)
    assert config.limits.max_viewers == 10 and config.limits.max_viewers_per_camera == 20


@pytest.mark.parametrize("text, bps", [
    ("4M", 4_000_000), ("800k", 800_000), ("2.5M", 2_500_000), ("800K", 800_000),
    ("1500000", 1_500_000), (" 4 M ", 4_000_000),
])
def test_bitrate_strings(text, bps):
    assert parse_config(cam(bitrate=text)).cameras[0].bitrate == bps


def test_overrides_win_and_replace_cameras(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[server]\nport = 9000\nhost = "::"\n[[camera]]\nsource = "testpattern"\n'
                    'name = "a"\n[[camera]]\nsource = "testpattern"\nname = "b"\n')
    config = load_config(str(path), {"server": {"port": 9001},
                                     "camera": [{"source": "testpattern", "name": "c"}]})
    assert (config.server.host, config.server.port) == ("::", 9001)
    assert [c.name for c in config.cameras] == ["c"]


def test_camera_config_built_in_code_gets_its_source_defaults():
    assert CameraConfig(name="x", source="picamera2").options == Picamera2Options()
    assert hash(Config())  # frozen all the way down


# ── errors ───────────────────────────────────────────────────────────────────

ERRORS = [
    # unknown keys, with the closest key suggested and the allowed ones listed
    ({"cameras": []}, r'^cameras: unknown key \(did you mean "camera"\?\); allowed keys: '
                      r"server, camera, limits, monitor$"),
    ({"server": {"prot": 1}}, r'^server.prot: unknown key \(did you mean "port"\?\); '
                              r"allowed keys: host, port, ice_hosts, ice_servers, token, token_file$"),
    (cam(fsp=30), r'^camera\[0\].fsp: unknown key \(did you mean "fps"\?\); allowed keys: name, '),
    ({"limits": {"zzz": 1}}, r"^limits.zzz: unknown key; allowed keys: max_viewers, "),
    (cam(options={"speed": 1}), r"^camera\[0\].options.speed: unknown key; "
                                r"The test pattern takes no options\.$"),
    ({"camera": [{"source": "file", "options": {"path": "/a.h264", "lop": True}}]},
     r'^camera\[0\].options.lop: unknown key \(did you mean "loop"\?\); allowed keys: path, loop$'),
    ({"server": {"ice_servers": [{"urls": "stun:x", "user": "u"}]}},
     r"^server.ice_servers\[0\].user: unknown key .*allowed keys: urls, username, credential, secret_file, credential_lifetime$"),
    # wrong types
    ({"server": {"port": "8080"}}, r'^server.port = "8080": must be an integer from 0 to 65535$'),
    ({"server": {"port": True}}, r"^server.port = true: must be an integer from 0 to 65535$"),
    (cam(fps=30.0), r"^camera\[0\].fps = 30.0: must be an integer from 1 to 120$"),
    (cam(hflip=1), r"^camera\[0\].hflip: unknown key"),
    ({"camera": [{"source": "picamera2", "options": {"hflip": 1}}]},
     r"^camera\[0\].options.hflip = 1: must be true or false$"),
    (cam(keyframe_interval="2s"),
     r'^camera\[0\].keyframe_interval = "2s": must be a number of seconds from 0.1 to 60$'),
    (cam(bitrate=4e6), r"^camera\[0\].bitrate = 4000000.0: must be bits per second from 50000 "
                       r'to 50000000: an integer, or a string like "800k" or "4M"$'),
    (cam(bitrate="4Q"), r'^camera\[0\].bitrate = "4Q": must be bits per second'),
    (cam(options=[]), r"^camera\[0\].options = \[\]: must be a table$"),
    ({"server": 8080}, r"^server = 8080: must be a table$"),
    ({"server": {"ice_hosts": "10.0.0.1"}},
     r'^server.ice_hosts = "10.0.0.1": must be an array, each item an IP address'),
    ({"camera": {"source": "testpattern"}},
     r'^camera = \{ source = "testpattern" \}: must be 1 to 8 \[\[camera\]\] tables'),
    # impossible values
    (cam(fps=0), r"^camera\[0\].fps = 0: must be an integer from 1 to 120$"),
    (cam(fps=121), r"^camera\[0\].fps = 121: must be an integer from 1 to 120$"),
    (cam(width=641), r"^camera\[0\].width = 641: must be an even integer from 64 to 4096$"),
    (cam(width=62), r"^camera\[0\].width = 62: must be an even integer from 64 to 4096$"),
    (cam(width=4098), r"^camera\[0\].width = 4098: must be an even integer from 64 to 4096$"),
    (cam(height=14), r"^camera\[0\].height = 14: must be an even integer from 16 to 2304$"),
    (cam(height=2306), r"^camera\[0\].height = 2306: must be an even integer from 16 to 2304$"),
    (cam(bitrate="60M"), r'^camera\[0\].bitrate = "60M": must be bits per second from 50000'),
    (cam(bitrate=49_999), r"^camera\[0\].bitrate = 49999: must be bits per second from 50000 "
                          r"to 50000000"),
    (cam(keyframe_interval=61), r"^camera\[0\].keyframe_interval = 61: must be a number of "
                                r"seconds from 0.1 to 60$"),
    (cam(keyframe_interval=0.05), r"^camera\[0\].keyframe_interval = 0.05: must be a number"),
    (cam(keyframe_interval=math.nan), r"^camera\[0\].keyframe_interval = nan: must be a number"),
    (cam(codec="h265"), r'^camera\[0\].codec = "h265": must be one of "h264", "vp8"$'),
    (cam(source="usb"), r'^camera\[0\].source = "usb": must be one of "testpattern", '
                        r'"picamera2", "file"$'),
    ({"server": {"port": 65536}}, r"^server.port = 65536: must be an integer from 0 to 65535$"),
    ({"camera": [{"source": "testpattern", "fec_rate": 0}]},
     r'^camera\[0\].fec_rate = 0: must be "adaptive" or a percentage from 1 to 100$'),
    ({"camera": [{"source": "testpattern", "fec": "yes"}]},
     r'^camera\[0\].fec = "yes": must be one of "auto", "off", "ulpfec", "flexfec"$'),
    ({"server": {"token": "short"}},
     r'^server.token = "short": must be a string of at least 16 characters$'),
    ({"limits": {"viewer_queue_frames": 31}},
     r"^limits.viewer_queue_frames = 31: must be an integer from 1 to 30$"),
    ({"limits": {"max_body_bytes": 100}},
     r"^limits.max_body_bytes = 100: must be an integer from 1024 to 1048576$"),
    ({"limits": {"keyframe_min_interval": 0}},
     r"^limits.keyframe_min_interval = 0: must be a number of seconds from 0.05 to 10$"),
    ({"limits": {"offer_burst": 0}},
     r"^limits.offer_burst = 0: must be an integer from 1 to 1000$"),
    ({"limits": {"offers_per_minute": 0.5}},
     r"^limits.offers_per_minute = 0.5: must be an integer from 1 to 6000$"),
    ({"camera": []}, r"^camera = \[\]: must be 1 to 8 \[\[camera\]\] tables \(leave them all out"),
    ({"camera": [{"source": "testpattern", "name": f"c{i}"} for i in range(9)]},
     r"^camera = \[.*\.\.\.: must be 1 to 8 \[\[camera\]\] tables"),
    # camera names
    (cam(name="Front Door"), r'^camera\[0\].name = "Front Door": must be 1 to 32 characters: '
                             r"lowercase letters, digits, '_' and '-', starting with a letter"),
    (cam(name="-x"), r'^camera\[0\].name = "-x": must be 1 to 32 characters'),
    (cam(name="a" * 33), r"^camera\[0\].name = \"a{33}\": must be 1 to 32"),
    ({"camera": [{"source": "testpattern", "name": "cam1"}, {"source": "testpattern"}]},
     r'^camera\[1\].name = "cam1": already used by camera\[0\]; camera names must be unique'),
    # source-specific rules
    ({"camera": [{"source": "picamera2", "codec": "vp8"}]},
     r'^camera\[0\].codec = "vp8": picamera2 cameras can only use "h264": no Raspberry Pi '
     r"has a VP8 hardware encoder$"),
    ({"camera": [{"source": "file"}]},
     r"^camera\[0\].options.path: missing; must be the path of an Annex-B H.264 file "
     r"\(.h264, .264\) or of an IVF file of VP8 \(.ivf\)$"),
    ({"camera": [{"source": "file", "options": {"path": 5}}]},
     r"^camera\[0\].options.path = 5: must be the path of an Annex-B H.264 file"),
    ({"camera": [{"source": "file", "options": {"path": "clip.mp4"}}]},
     r'^camera\[0\].options.path = "clip.mp4": must be the path of an Annex-B H.264 file'),
    ({"camera": [{"source": "file", "options": {"path": "clip.ivf"}}]},
     r'^camera\[0\].options = \{ path = "clip.ivf" \}: the file\'s extension says it holds '
     r'vp8, but the camera\'s codec is "h264": set codec = "vp8"$'),
    ({"camera": [{"source": "file", "codec": "vp8", "options": {"path": "CLIP.H264"}}]},
     r'^camera\[0\].options = \{ path = "CLIP.H264" \}: the file\'s extension says it holds '
     r'h264, but the camera\'s codec is "vp8": set codec = "h264"$'),
    ({"camera": [{"source": "file", "options": {"path": "/a.h264", "loop": "yes"}}]},
     r'^camera\[0\].options.loop = "yes": must be true or false$'),
    ({"camera": [{"source": "picamera2", "options": {"camera_num": -1}}]},
     r"^camera\[0\].options.camera_num = -1: must be an integer from 0 to 15$"),
    ({"camera": [{"source": "picamera2", "options": {"camera": 0}}]},
     r'^camera\[0\].options.camera: unknown key \(did you mean "camera_num"\?\); allowed keys: '
     r"camera_num, hflip, vflip$"),
    ({"camera": [{"name": "x"}]}, r'^camera\[0\].source: missing; must be one of "testpattern"'),
    # ICE
    ({"server": {"ice_hosts": ["192.168.1.300"]}},
     r'^server.ice_hosts\[0\] = "192.168.1.300": must be an IP address such as'),
    ({"server": {"ice_hosts": ["pi.local"]}}, r'^server.ice_hosts\[0\] = "pi.local": must be'),
    ({"server": {"ice_servers": [{"urls": "stun.example.org"}]}},
     r'^server.ice_servers\[0\].urls = "stun.example.org": must be a STUN or TURN URL starting '
     r'with "stun:", "stuns:", "turn:" or "turns:", or a non-empty array of them$'),
    ({"server": {"ice_servers": [{"urls": []}]}}, r"^server.ice_servers\[0\].urls = \[\]: must be"),
    ({"server": {"ice_servers": [{"urls": ["stun:a", "http://b"]}]}},
     r'^server.ice_servers\[0\].urls = \["stun:a", "http://b"\]: must be a STUN or TURN URL'),
    ({"server": {"ice_servers": [{"urls": "turn:t.example.org", "username": "u"}]}},
     r'^server.ice_servers\[0\].urls = \["turn:t.example.org"\]: TURN servers need '
     r"username and credential, or secret_file$"),
    ({"server": {"ice_servers": [{"urls": "stun:s.example.org", "secret_file": "/s"}]}},
     r'^server.ice_servers\[0\].secret_file = "/s": only TURN servers take a secret'),
    ({"server": {"ice_servers": [{"urls": "turn:t", "username": "u", "credential": "p",
                                  "secret_file": "/s"}]}},
     r'^server.ice_servers\[0\].credential = "p": give either credential \(static\) or '
     r"secret_file \(time-limited credentials\), not both$"),
    ({"server": {"ice_servers": [{"urls": "turn:t", "secret_file": "/s",
                                  "credential_lifetime": 60}]}},
     r"^server.ice_servers\[0\].credential_lifetime = 60: must be a number of seconds from "
     r"600 to 604800$"),
    ({"server": {"ice_servers": [{}]}},
     r"^server.ice_servers\[0\].urls: missing; must be a STUN or TURN URL"),
    ({"server": {"ice_servers": {"urls": "stun:x"}}},
     r"^server.ice_servers = \{ urls = \"stun:x\" \}: must be an array, each item a table with "
     r"keys urls, username, credential, secret_file, credential_lifetime$"),
    # [[camera.forward]]
    ({"camera": [{"name": "c", "source": "testpattern", "forward": [{"type": "whip"}]}]},
     r"^camera\[0\].forward\[0\].url: missing; a forward of type whip needs it$"),
    ({"camera": [{"name": "c", "source": "testpattern",
                  "forward": [{"type": "rtp", "host": "10.0.0.2"}]}]},
     r"^camera\[0\].forward\[0\].port: missing; a forward of type rtp needs it$"),
    ({"camera": [{"name": "c", "source": "testpattern",
                  "forward": [{"type": "whip", "url": "https://s/whip", "host": "10.0.0.2"}]}]},
     r'^camera\[0\].forward\[0\].host = "10.0.0.2": is for forwards of type rtp, not whip$'),
    ({"camera": [{"name": "c", "source": "testpattern",
                  "forward": [{"type": "whip", "url": "sfu.example.org/whip"}]}]},
     r'^camera\[0\].forward\[0\].url = "sfu.example.org/whip": must be an http:// or '
     r"https:// URL$"),
    ({"camera": [{"name": "a", "source": "testpattern",
                  "forward": [{"type": "rtp", "host": "10.0.0.2", "port": 5004}]},
                 {"name": "b", "source": "testpattern",
                  "forward": [{"type": "rtp", "host": "10.0.0.2", "port": 5004}]}]},
     r"^camera\[1\].forward\[0\]: sends to rtp://10.0.0.2:5004 as camera\[0\].forward\[0\] "
     r"does; each forward needs a target of its own \(an RTP port, a WHIP URL\)$"),
    # [monitor]
    ({"monitor": {"sample_interval": 1}},
     r"^monitor.sample_interval = 1: must be a number of seconds from 5 to 600$"),
    ({"monitor": {"warn_rss_mb": "300M"}},
     r'^monitor.warn_rss_mb = "300M": must be an integer from 64 to 16384$'),
    ({"monitor": {"critical_rss_mb": 32}},
     r"^monitor.critical_rss_mb = 32: must be an integer from 64 to 16384$"),
    ({"monitor": {"warn_rss_mb": 500, "critical_rss_mb": 400}},
     r"^monitor.critical_rss_mb = 400: must be above warn_rss_mb \(500\)$"),
    ({"monitor": {"critical_rss_mb": 320}},
     r"^monitor.critical_rss_mb = 320: must be above warn_rss_mb \(320\)$"),
    ({"monitor": {"warn_rss_mb": 500}},
     r"^monitor.warn_rss_mb = 500: must be below critical_rss_mb \(448, its default\)$"),
    ({"monitor": {"leak_slope_mb_per_h": 0}},
     r"^monitor.leak_slope_mb_per_h = 0: must be a number of MB per hour from 0.1 to 1000$"),
    ({"monitor": {"debug_api": "yes"}}, r'^monitor.debug_api = "yes": must be true or false$'),
    ({"monitor": {"debug": True}},
     r'^monitor.debug: unknown key \(did you mean "debug_api"\?\); allowed keys: '
     r"sample_interval, warn_rss_mb, critical_rss_mb, leak_slope_mb_per_h, exit_after_camera_down, debug_api$"),
]


@pytest.mark.parametrize("data, message", ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_error_messages(data, message):
    text = error_of(data)
    assert text.startswith("error in test.toml:\n  ")
    lines = text.splitlines()[1:]
    assert len(lines) == 1, text
    assert re.search(message, lines[0].strip()), lines[0]


def test_all_errors_are_reported_together():
    with pytest.raises(ConfigError) as info:
        parse_config({
            "bogus": 1,
            "server": {"port": -1, "ice_hosts": ["x", "10.0.0.1", "y"]},
            "camera": [{"source": "picamera2", "codec": "vp8", "fps": 0},
                       {"source": "file", "name": "BAD"}],
            "limits": {"max_viewers": 0},
        }, "many.toml")
    assert info.value.source == "many.toml"
    assert [e.split(" ")[0].rstrip(":") for e in info.value.errors] == [
        "bogus", "server.port", "server.ice_hosts[0]", "server.ice_hosts[2]",
        "camera[0].fps", "camera[0].codec", "camera[1].name", "camera[1].options.path",
        "limits.max_viewers"]
    assert str(info.value).count("\n") == len(info.value.errors)


def test_labels_rename_paths_given_on_the_command_line():
    with pytest.raises(ConfigError, match=r"(?m)^  --port = -1: must be .*\n"
                                          r"  --camera\[0\].fps = 0: must be "):
        parse_config({"server": {"port": -1}, "camera": [{"source": "testpattern", "fps": 0}]},
                     labels={"server.port": "--port", "camera": "--camera"})


def test_toml_syntax_error_names_file_line_and_column(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[server]\nport = 8080\nhost = = "x"\n')
    with pytest.raises(ConfigError, match=rf"^error in {re.escape(str(path))}:\n"
                                          r"  line 3, column 8: invalid TOML: Invalid value$"):
        load_config(str(path))


def test_toml_error_at_end_of_document(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nice_hosts = [\n")
    with pytest.raises(ConfigError, match=r"line 3, column 1: invalid TOML: Invalid value$"):
        load_config(str(path))


def test_toml_duplicate_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nport = 1\nport = 2\n")
    with pytest.raises(ConfigError, match=r"line 3, column 9: invalid TOML: Cannot overwrite a value$"):
        load_config(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^error in .*nope.toml:\n  no such file$"):
        load_config(str(tmp_path / "nope.toml"))


def test_unreadable_path(tmp_path):
    with pytest.raises(ConfigError, match=r"^error in .*:\n  cannot read it: Is a directory$"):
        load_config(str(tmp_path))


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[server]\nhost = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"line 2: not UTF-8 text, as TOML requires$"):
        load_config(str(path))


# ── the example file ─────────────────────────────────────────────────────────


def test_example_file_is_generated_from_the_schema():
    assert EXAMPLE.read_text() == example_config(), \
        "regenerate: python -m rpistream.config > config.example.toml"


def test_example_file_loads_as_the_defaults():
    assert load_config(str(EXAMPLE)) == Config()


def test_example_file_uncommented_is_valid_and_documents_every_key():
    lines = [line[1:] if re.match(r"#(\[|[a-z_]+ = |    \{|\])", line) else line
             for line in EXAMPLE.read_text().splitlines()]
    data = tomllib.loads("\n".join(lines))
    config = parse_config(data, "uncommented example")
    assert {c.source for c in config.cameras} == {"picamera2", "file"}
    documented = {m[1] for m in re.finditer(r"(?m)^#?([a-z_]+) = ", "\n".join(lines))}
    every = {k for cls in (ServerConfig, CameraConfig, RecordConfig, ForwardConfig,
                           LimitsConfig, MonitorConfig, *SOURCE_OPTIONS.values())
             for k in schema(cls)} - {"options", "record", "forward"}
    assert every <= documented
    assert max(map(len, EXAMPLE.read_text().splitlines())) <= 100


# ── fuzzing ──────────────────────────────────────────────────────────────────

SCALARS = st.one_of(
    st.integers(-10, 70000), st.integers(), st.floats(), st.booleans(), st.text(max_size=8),
    st.sampled_from(["h264", "vp8", "testpattern", "picamera2", "file", "4M", "800k", "cam0",
                     "stun:s", "turn:t", "127.0.0.1", "x" * 16]),
    st.from_regex(r"[0-9]{1,400}(\.[0-9]+)?[kMG]?", fullmatch=True),
    st.integers(10**4300, 10**4400),  # str() of these raises ValueError in Python 3.11
    st.datetimes(), st.dates(), st.times(),
)
ANY = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=2)
                   | st.dictionaries(st.text(max_size=5), inner, max_size=2), max_leaves=3)
REQUIRED = {"source", "path", "urls"}


def table_of(cls, value=ANY):
    keys = list(schema(cls))
    return st.dictionaries(st.sampled_from(keys) | st.text(max_size=6), value, max_size=len(keys))


OPTIONS = st.dictionaries(
    st.sampled_from(sorted({k for c in SOURCE_OPTIONS.values() for k in schema(c)})) | st.text(max_size=4),
    ANY, max_size=4)
CAMERA = table_of(CameraConfig, ANY | OPTIONS)
CONFIG = st.dictionaries(
    st.sampled_from(["server", "camera", "limits", "monitor"]) | st.text(max_size=6),
    st.one_of(table_of(ServerConfig,
                       ANY | st.lists(table_of(IceServer), max_size=2)),
              st.lists(CAMERA, max_size=3)
              | st.lists(st.just({"source": "testpattern"}), min_size=8, max_size=9), table_of(LimitsConfig), table_of(MonitorConfig), ANY),
    max_size=4)


def join(path, key):
    key = key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)
    return f"{path}.{key}" if path else key


def paths(value, path=""):
    """Every key path in `value`, spelled as the error messages spell them."""
    yield path
    if isinstance(value, dict):
        for k in REQUIRED | {"options"}:  # keys an error may name because they are missing
            yield join(path, k)
        for k, v in value.items():
            yield from paths(v, join(path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, f"{path}[{i}]")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CONFIG)
def test_fuzz_returns_config_or_config_error_naming_the_key(data):
    try:
        config = parse_config(data)
    except ConfigError as e:
        assert e.errors
        known = set(paths(data)) - {""}
        for line in e.errors:
            # A required key of a table left out is named under the table's path.
            assert any(line.startswith(p + " = ") or line.startswith(p + ": ")
                       or (line.startswith(p + ".") and ": missing;" in line)
                       for p in known), line
    else:
        assert isinstance(config, Config)


def valid(type_):
    """Values `type_` must accept, from its own declared bounds."""
    if isinstance(type_, (Int, Bitrate)):
        ints = st.integers(type_.lo, type_.hi)
        return ints.map(lambda v: v - v % 2 if v - v % 2 >= type_.lo else v + 1) \
            if getattr(type_, "even", False) else ints
    if isinstance(type_, Seconds):
        return st.floats(type_.lo, type_.hi) | st.integers(math.ceil(type_.lo), int(type_.hi))
    if isinstance(type_, Bool):
        return st.booleans()
    if isinstance(type_, Choice):
        return st.sampled_from(type_.values)
    raise TypeError(type_)


SCALAR_KEYS = {cls: {k: f for k, f in schema(cls).items()
                     if isinstance(f.metadata["type"], (Int, Bitrate, Seconds, Bool, Choice))
                     and k != "source"}
               for cls in (CameraConfig, LimitsConfig, ServerConfig)}


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_fuzz_values_within_declared_bounds_are_accepted(data):
    drawn = {cls: data.draw(st.fixed_dictionaries(
        {}, optional={k: valid(f.metadata["type"]) for k, f in keys.items()}))
        for cls, keys in SCALAR_KEYS.items()}
    camera = {"source": "testpattern", **drawn[CameraConfig]}
    config = parse_config({"camera": [camera], "limits": drawn[LimitsConfig],
                           "server": drawn[ServerConfig]})
    for section, obj in ((camera, config.cameras[0]), (drawn[LimitsConfig],
                                                       config.limits)):
        for k, v in section.items():
            if k != "source":
                assert getattr(obj, k) == v


def test_dataclasses_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().server.port = 1  # type: ignore[misc]


def test_only_a_config_without_cameras_gets_the_placeholder_camera():
    (camera,) = parse_config({}).cameras
    assert camera.placeholder and camera.fallback_reason is None
    (named,) = parse_config({"camera": [{"source": "testpattern"}]}).cameras
    assert not named.placeholder  # asked for: the sources leave it as it is


def test_token_file_is_read_when_no_token_is_set(tmp_path):
    token = tmp_path / "token"
    token.write_text("a-generated-token-of-32-chars-xx\n")
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[server]\ntoken_file = "{token}"\n')
    assert load_config(str(config_file)).server.token == "a-generated-token-of-32-chars-xx"
    config_file.write_text(f'[server]\ntoken = "the-token-in-the-config"\ntoken_file = "{token}"\n')
    assert load_config(str(config_file)).server.token == "the-token-in-the-config"


def test_a_turn_secret_is_read_from_its_file_and_never_shown(tmp_path):
    secret = tmp_path / "turn-secret"
    secret.write_text("the-shared-secret-of-coturn\n")
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[[server.ice_servers]]\nurls = "turn:t.example.org"\n'
                           f'secret_file = "{secret}"\n')
    (ice,) = load_config(str(config_file)).server.ice_servers
    assert ice.secret == "the-shared-secret-of-coturn" and ice.credential_lifetime == 86400
    assert "the-shared-secret" not in repr(ice)
    secret.write_text("short")
    with pytest.raises(ConfigError, match=r"server.ice_servers\[0\].secret_file = \".*\": "
                                          r"holds 5 characters; a TURN secret needs at least 16"):
        load_config(str(config_file))


def test_a_whip_bearer_token_is_read_from_its_file_and_never_shown(tmp_path):
    token = tmp_path / "whip-token"
    token.write_text("the-endpoints-bearer-token\n")
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[[camera]]\nname = "c"\nsource = "testpattern"\n'
                           f'[[camera.forward]]\ntype = "whip"\nurl = "https://s/whip"\n'
                           f'bearer_token_file = "{token}"\n')
    (forward,) = load_config(str(config_file)).cameras[0].forward
    assert forward.bearer_token == "the-endpoints-bearer-token"
    assert "bearer-token" not in repr(forward)
    token.write_text("short")
    with pytest.raises(ConfigError, match=r"camera\[0\].forward\[0\].bearer_token_file = "
                                          r"\".*\": holds 5 characters; a bearer token needs"):
        load_config(str(config_file))


@pytest.mark.parametrize("content, message", [
    (None, r"server.token_file = \".*/token\": cannot read it: No such file or directory"),
    ("short\n", r"server.token_file = \".*/token\": holds 5 characters; a token needs at least 16"),
])
def test_token_file_errors(tmp_path, content, message):
    token = tmp_path / "token"
    if content is not None:
        token.write_text(content)
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[server]\ntoken_file = "{token}"\n')
    with pytest.raises(ConfigError, match=message):
        load_config(str(config_file))
