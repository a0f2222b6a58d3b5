import importlib.util
import json
import re
import signal
import subprocess
import sys
import urllib.request
import types

import pytest

from rpistream import __version__, cli
from rpistream.config import loader
from rpistream.cli import build_config, build_parser, main
from rpistream.config import ConfigError, FileOptions, parse_camera_spec


def run(*argv: str) -> subprocess.CompletedProcess:
    """`python -m rpistream ARGV` as a real process."""
    return subprocess.run([sys.executable, "-m", "rpistream", *argv],
                          capture_output=True, text=True, timeout=60)


def write(tmp_path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


def serve_args(*argv: str):
    return build_parser().parse_args(["serve", *argv])


@pytest.fixture(autouse=True)
def no_default_file(monkeypatch, tmp_path):
    monkeypatch.setattr(loader, "DEFAULT_CONFIG_PATH", str(tmp_path / "absent.toml"))


# ── rpistream check, as a subprocess ─────────────────────────────────────────


def test_check_valid_config_exits_0_and_lists_each_camera(tmp_path):
    path = write(tmp_path, '[[camera]]\nname = "front"\nsource = "testpattern"\n'
                           '[[camera]]\nname = "side"\nsource = "testpattern"\ncodec = "vp8"\n'
                           'width = 640\nheight = 480\nfps = 15\nbitrate = "800k"\n')
    result = run("check", "--config", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"config: {path}: valid" in result.stdout
    assert "  front: testpattern, h264 1280x720 30 fps 4 Mbit/s: ok" in result.stdout
    assert "  side: testpattern, vp8 640x480 15 fps 800 kbit/s: ok" in result.stdout
    assert "h264: ok: libx264" in result.stdout
    assert result.stdout.rstrip().endswith("ready")


def test_check_missing_source_or_file_exits_1(tmp_path):
    path = write(tmp_path, '[[camera]]\nsource = "file"\noptions = { path = "/nonexistent.h264" }\n'
                           '[[camera]]\nsource = "testpattern"\n')
    result = run("check", "--config", path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "  cam0: file, h264 1280x720 30 fps 4 Mbit/s: file /nonexistent.h264: cannot be read" \
        in result.stdout
    assert "  cam1: testpattern, h264 1280x720 30 fps 4 Mbit/s: ok" in result.stdout
    assert "NOT READY" in result.stdout


@pytest.mark.skipif(importlib.util.find_spec("picamera2") is not None,
                    reason="picamera2 is installed here")
def test_check_picamera2_without_picamera2_exits_1(tmp_path):
    result = run("check", "--config", write(tmp_path, '[[camera]]\nsource = "picamera2"\n'))
    assert result.returncode == 1
    assert "  cam0: picamera2, h264 1280x720 30 fps 4 Mbit/s: source picamera2: " in result.stdout


def test_check_invalid_config_exits_2_without_traceback(tmp_path):
    path = write(tmp_path, '[[camera]]\nsource = "testpattern"\nfps = 0\n[server]\nprot = 1\n')
    result = run("check", "--config", path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"rpistream: error in {path}:\n"
        "  server.prot: unknown key (did you mean \"port\"?); allowed keys: host, port, "
        "ice_hosts, ice_servers, token, token_file\n"
        "  camera[0].fps = 0: must be an integer from 1 to 120\n")


def test_check_toml_syntax_error_exits_2(tmp_path):
    result = run("check", "--config", write(tmp_path, "[server\n"))
    assert result.returncode == 2
    assert "line 1, column 8: invalid TOML" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_missing_file_exits_2(tmp_path):
    result = run("check", "--config", str(tmp_path / "nope.toml"))
    assert (result.returncode, result.stderr) == (
        2, f"rpistream: error in {tmp_path / 'nope.toml'}:\n  no such file\n")


@pytest.mark.parametrize("argv", [[], ["bogus"], ["check", "--bogus"], ["serve", "--port", "x"],
                                  ["serve", "--log-level", "loud"]])
def test_usage_errors_exit_2(argv):
    result = run(*argv)
    assert result.returncode == 2
    assert "usage: rpistream" in result.stderr


def test_help_and_version():
    result = run("--help")
    assert result.returncode == 0
    assert "serve" in result.stdout and "check" in result.stdout
    result = run("serve", "--help")
    assert result.returncode == 0
    assert "--camera SPEC" in result.stdout and "SOURCE[:key=value,...]" in result.stdout
    assert run("--version").stdout == f"rpistream {__version__}\n"


# ── serve's arguments: build_config ──────────────────────────────────────────


def test_serve_defaults():
    config = build_config(serve_args())
    assert config.server.port == 8080
    assert [(c.name, c.source, c.width, c.height, c.fps, c.codec) for c in config.cameras] == [
        ("cam0", "testpattern", 1280, 720, 30, "h264")]


def test_flags_win_over_the_file(tmp_path):
    path = write(tmp_path, '[server]\nhost = "::"\nport = 9000\n[[camera]]\nsource = "picamera2"\n')
    config = build_config(serve_args("--config", path, "--port", "9100"))
    assert (config.server.host, config.server.port) == ("::", 9100)
    assert config.cameras[0].source == "picamera2"
    config = build_config(serve_args("--config", path, "--host", "127.0.0.1",
                                     "--camera", "testpattern", "--camera", "testpattern"))
    assert config.server.host == "127.0.0.1"
    assert [(c.name, c.source) for c in config.cameras] == [
        ("cam0", "testpattern"), ("cam1", "testpattern")]


@pytest.mark.parametrize("spec, table", [
    ("testpattern", {"source": "testpattern"}),
    ("testpattern:codec=vp8,width=640,height=480,name=cam1",
     {"source": "testpattern", "codec": "vp8", "width": 640, "height": 480, "name": "cam1"}),
    ("file:path=/tmp/a.h264,fps=25",
     {"source": "file", "fps": 25, "options": {"path": "/tmp/a.h264"}}),
    ("file:path=/tmp/a b.ivf,loop=no,keyframe_interval=0.5,bitrate=2M",
     {"source": "file", "keyframe_interval": 0.5, "bitrate": "2M",
      "options": {"path": "/tmp/a b.ivf", "loop": False}}),
    ("picamera2:camera_num=1,hflip=true,path=x",
     {"source": "picamera2", "options": {"camera_num": 1, "hflip": True, "path": "x"}}),
    ("testpattern:fps=fast,width=", {"source": "testpattern", "fps": "fast", "width": ""}),
    ("usb:fps=5,x=1", {"source": "usb", "fps": 5, "options": {"x": "1"}}),
])
def test_camera_spec_parsing(spec, table):
    assert parse_camera_spec(spec) == table


def test_camera_spec_builds_cameras():
    config = build_config(serve_args(
        "--camera", "testpattern:codec=vp8,width=640,height=480,name=front",
        "--camera", "file:path=/tmp/a.h264,fps=25,loop=false"))
    first, second = config.cameras
    assert (first.name, first.codec, first.width, first.height) == ("front", "vp8", 640, 480)
    assert (second.name, second.fps, second.options) == (
        "cam1", 25, FileOptions(path="/tmp/a.h264", loop=False))


@pytest.mark.parametrize("argv, message", [
    (["--camera", "testpattern:fps"],
     r'^error in the command line:\n  --camera testpattern:fps: "fps" is not key=value$'),
    (["--camera", "testpattern:=3"], r'--camera testpattern:=3: "=3" is not key=value$'),
    (["--camera", "testpattern:fps=1,fps=2"], r"--camera testpattern:fps=1,fps=2: fps is given twice$"),
    (["--camera", "file:source=file"], r"--camera file:source=file: source cannot be a key"),
    (["--camera", "testpattern:fps=0"],
     r"^error in the built-in defaults and the command line:\n"
     r"  --camera\[0\].fps = 0: must be an integer from 1 to 120$"),
    (["--camera", "testpattern", "--camera", "testpattern:width=abc"],
     r'^.*\n  --camera\[1\].width = "abc": must be an even integer from 64 to 4096$'),
    (["--camera", "testpattern:bitrate=4Q"], r'--camera\[0\].bitrate = "4Q": must be bits per second'),
    (["--camera", "picamera2:codec=vp8"],
     r'--camera\[0\].codec = "vp8": picamera2 cameras can only use "h264": no Raspberry Pi'),
    (["--camera", "file:fps=25"], r"--camera\[0\].options.path: missing; must be the path of"),
    (["--camera", "testpattern:zoom=2"],
     r"--camera\[0\].options.zoom: unknown key; The test pattern takes no options\.$"),
    (["--camera", "webcam"], r'--camera\[0\].source = "webcam": must be one of "testpattern"'),
    (["--camera", "testpattern:name=a", "--camera", "testpattern:name=a"],
     r'--camera\[1\].name = "a": already used by --camera\[0\]; camera names must be unique'),
    (["--camera", "testpattern:name=cam1", "--camera", "testpattern"],
     r'--camera\[1\].name = "cam1": already used by --camera\[0\]; camera names must be unique '
     r"\(they are part of the URL /cameras/<name>/\); this is the default name of the camera "
     r"at position 1: give it a name$"),
    (["--port", "-1"], r"\n  --port = -1: must be an integer from 0 to 65535$"),
    (["--host", ""], r'\n  --host = "": must be a host name or IP address$'),
])
def test_flag_errors_name_the_flag(argv, message):
    with pytest.raises(ConfigError, match=message):
        build_config(serve_args(*argv))


def test_spec_errors_are_reported_together():
    with pytest.raises(ConfigError) as info:
        build_config(serve_args("--camera", "a:b", "--camera", "c:d=1,e"))
    assert info.value.errors == ('--camera a:b: "b" is not key=value',
                                 '--camera c:d=1,e: "e" is not key=value')


def test_file_errors_name_the_file_with_flags_given(tmp_path):
    path = write(tmp_path, "[limits]\nmax_viewers = 0\n")
    with pytest.raises(ConfigError, match=rf"^error in {path} and the command line:\n"
                                          r"  limits.max_viewers = 0: must be an integer"):
        build_config(serve_args("--config", path, "--port", "9000"))


# ── serve, in-process with a stand-in server ─────────────────────────────────


def test_serve_runs_until_sigterm():
    """`python -m rpistream serve` for real: it prints the viewer URL, answers
    /healthz, and exits 0 soon after SIGTERM."""
    process = subprocess.Popen(
        [sys.executable, "-m", "rpistream", "serve", "--host", "127.0.0.1", "--port", "0",
         "--camera", "testpattern:width=320,height=240"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # blocks until serving, or EOF if it died
        match = re.search(r"http://localhost:(\d+)/", line)
        assert match, line + process.stderr.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{match[1]}/healthz", timeout=5) as r:
            assert json.load(r)["status"] == "ok"
        # No server.token: it says so, next to the URLs.
        assert process.stdout.readline().startswith("  camera cam0: ")
        assert process.stdout.readline() == (
            "WARNING: no access token is set (server.token in the config): anyone who can "
            f"reach port {match[1]} can watch every camera\n")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()


def test_serve_config_error_exits_2_before_starting(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "rpistream.server",
                        types.SimpleNamespace(run=lambda config: pytest.fail("server started")))
    assert main(["serve", "--camera", "testpattern:fps=0"]) == 2
    assert capsys.readouterr().err == (
        "rpistream: error in the built-in defaults and the command line:\n"
        "  --camera[0].fps = 0: must be an integer from 1 to 120\n")


@pytest.mark.parametrize("status, available", [
    ("ok: PyAV has libx264", True),
    ("unavailable: picamera2 not installed", False), ("unknown: not reported", False),
])
def test_status_convention(status, available):
    assert cli._is_available(status) is available
