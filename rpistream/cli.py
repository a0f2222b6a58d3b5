"""Command line: `rpistream serve` and `rpistream check`.

Exit status: 0 success; 1 `check` found something missing on this machine;
2 usage or configuration error (argparse's convention for usage errors).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys

from rpistream import __version__
from rpistream.sources import available_sources, camera_stack, choose_default_camera
from rpistream.config import (DEFAULT_CONFIG_PATH, Config, ConfigError, load_config,
                              parse_camera_spec, resolve_config_path)

# The PyAV encoder behind each codec (docs/DESIGN.md §2: libx264 zerolatency,
# libvpx realtime).
PYAV_ENCODERS = {"h264": "libx264", "vp8": "libvpx"}

# Sources that encode with PyAV. picamera2 uses the Pi's hardware encoder (on
# a Pi 5, picamera2's own software one); file replays frames already encoded.
ENCODES_WITH_PYAV = {"testpattern"}

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def build_config(args: argparse.Namespace) -> Config:
    """The config `serve` runs: the file, then the flags, which win.

    Errors in values given by flags name the flag (`--port`, `--camera[1].fps`).
    """
    overrides: dict = {}
    labels: dict[str, str] = {}
    for flag in ("host", "port"):
        if getattr(args, flag, None) is not None:
            overrides.setdefault("server", {})[flag] = getattr(args, flag)
            labels[f"server.{flag}"] = f"--{flag}"
    specs = getattr(args, "camera", None)
    if specs:
        errors, cameras = [], []
        for spec in specs:
            try:
                cameras.append(parse_camera_spec(spec))
            except ValueError as e:
                errors.append(f"--camera {shlex.quote(spec)}: {e}")
        if errors:
            raise ConfigError("the command line", errors)
        overrides["camera"] = cameras
        labels["camera"] = "--camera"
    return load_config(args.config, overrides, labels=labels)


def serve(args: argparse.Namespace) -> int:
    config = build_config(args)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from rpistream import server  # imported here: `check` must work without the server's imports

    return server.run(config) or 0


def _is_available(status: str) -> bool:
    # Statuses are human-readable text: "ok: ..." when usable, else why not.
    return status.startswith("ok")


def encoder_status() -> dict[str, str]:
    """Codec -> status of its PyAV encoder."""
    try:
        import av
    except ImportError as e:
        return {}.fromkeys(PYAV_ENCODERS, f"not available: PyAV does not import: {e}")
    status = {}
    for codec, encoder in PYAV_ENCODERS.items():
        try:
            av.codec.Codec(encoder, "w")
            status[codec] = f"ok: {encoder}"
        except Exception as e:  # UnknownCodecError, or an FFmpeg built without it
            status[codec] = f"not available: {encoder}: {e}"
    return status


def _bitrate(bps: int) -> str:
    return f"{bps / 1e6:g} Mbit/s" if bps >= 1_000_000 else f"{bps / 1e3:g} kbit/s"


def check(args: argparse.Namespace) -> int:
    config = choose_default_camera(build_config(args))
    path = resolve_config_path(args.config)
    print(f"config: {path or f'built-in defaults (there is no {DEFAULT_CONFIG_PATH})'}: valid")
    print(f"server: http://{config.server.host}:{config.server.port}/")
    sources, encoders = available_sources(), encoder_status()
    ready = True
    print("cameras:")
    for cam in config.cameras:
        problems = []
        status = sources.get(cam.source, "unknown: not reported")
        if not _is_available(status):
            problems.append(f"source {cam.source}: {status}")
        if cam.source in ENCODES_WITH_PYAV and not _is_available(encoders[cam.codec]):
            problems.append(f"encoder {cam.codec}: {encoders[cam.codec]}")
        if cam.source == "file" and not os.access(cam.options.path, os.R_OK):
            problems.append(f"file {cam.options.path}: cannot be read")
        ready = ready and not problems
        fallback = f" (a test pattern, because {cam.fallback_reason})" if cam.fallback_reason \
            else ""
        print(f"  {cam.name}: {cam.source}, {cam.codec} {cam.width}x{cam.height} "
              f"{cam.fps} fps {_bitrate(cam.bitrate)}: "
              + ("; ".join(problems) if problems else "ok") + fallback)
    print("sources on this machine:")
    for kind, status in sources.items():
        print(f"  {kind}: {status}")
    print("camera stack, as this Python finds it:")
    for module in camera_stack.MODULES:
        print(f"  {camera_stack.where(module) or module + ': not installed'}")
    print("PyAV encoders:")
    for codec, status in encoders.items():
        print(f"  {codec}: {status}")
    print("ready" if ready else "NOT READY: see the cameras above")
    return 0 if ready else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rpistream", description="Low-latency WebRTC camera server.")
    parser.add_argument("--version", action="version", version=f"rpistream {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_help = ("TOML config file (default: /etc/rpistream/config.toml if it "
                   "exists, else built-in defaults)")

    p = commands.add_parser("serve", help="run the server",
                            description="Run the server. Flags override the config file.")
    p.add_argument("--config", metavar="PATH", help=config_help)
    p.add_argument("--host", help="address to listen on (server.host)")
    p.add_argument("--port", type=int, help="port to listen on (server.port)")
    p.add_argument(
        "--camera", action="append", metavar="SPEC",
        help="a camera, replacing the configured ones; repeat for more. SPEC is "
             "SOURCE[:key=value,...], e.g. testpattern, "
             "testpattern:codec=vp8,width=640,height=480,name=cam1, "
             "file:path=/tmp/a.h264,fps=25. Keys: any [[camera]] key; other keys "
             "are the source's options. Values cannot contain commas.")
    p.add_argument("--log-level", default="info", type=str.lower, choices=LOG_LEVELS,
                   help="logging level (default: info)")
    p.set_defaults(func=serve)

    p = commands.add_parser(
        "check", help="validate the config and what this machine provides",
        description="Validate the config and report the sources and encoders "
                    "available here. Exit 0 if every camera can run, 1 if not, "
                    "2 if the config is invalid.")
    p.add_argument("--config", metavar="PATH", help=config_help)
    p.set_defaults(func=check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"rpistream: {e}", file=sys.stderr)
        return 2
