"""Benchmark: RTP packetizers, compiled vs pure-Python twin vs aiortc's `_packetize`.

Frames like a camera's: a 150 KB keyframe and a 15 KB delta frame; for H.264 an
access unit of SPS + PPS + one IDR NAL (one slice NAL for the delta), random
payload without start-code emulation; MTU 1200. aiortc's packet-size constant is
set to our max payload so both make the same number of packets. aiortc returns
bare payloads; ours are complete RTP packets (header written), in one buffer.

    python bench/bench_rtp.py [--quick] [--json]

--json prints one JSON object as the last line: packets/s of the compiled
module ÷ aiortc's, and its keyframe time ÷ one memcpy of the same bytes.
"""

from __future__ import annotations

import random
import re
import resource

from aiortc.codecs import h264 as aiortc_h264
from aiortc.codecs import vpx as aiortc_vpx

from rpistream.core import _rtp, _rtp_py

import timing
from timing import best_ns

MTU = 1200
KEYFRAME_SIZE = 150_000
DELTA_SIZE = 15_000
FOUR_BYTE_START = b"\x00\x00\x00\x01"
EMULATION = re.compile(b"\x00\x00(?=[\x00-\x03])")


def nal_unit(header: int, size: int, rng: random.Random) -> bytes:
    """About `size` bytes of NAL that look like entropy-coded slice data: random,
    with emulation prevention (H.264 §7.4.1: 00 00 0x, x ≤ 3, becomes 00 00 03 0x)
    and a non-zero last byte (the RBSP stop bit)."""
    body = EMULATION.sub(b"\x00\x00\x03", rng.randbytes(size - 2))
    return bytes([header]) + body + b"\x80"


def frames() -> dict[str, bytes]:
    rng = random.Random(2024)
    sps, pps = nal_unit(0x67, 20, rng), nal_unit(0x68, 5, rng)
    return {
        "vp8_key": rng.randbytes(KEYFRAME_SIZE),
        "vp8_delta": rng.randbytes(DELTA_SIZE),
        "h264_key": (FOUR_BYTE_START + sps + FOUR_BYTE_START + pps + FOUR_BYTE_START
                     + nal_unit(0x65, KEYFRAME_SIZE, rng)),
        "h264_delta": FOUR_BYTE_START + nal_unit(0x41, DELTA_SIZE, rng),
    }


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def run(quick: bool) -> tuple[list[tuple], dict[str, float]]:
    data = frames()
    repeat = 5 if quick else 15
    budget_ns = 150_000_000 if quick else 1_000_000_000  # per row, roughly

    vp8_c, h264_c = _rtp.Vp8Packetizer(mtu=MTU), _rtp.H264Packetizer(mtu=MTU)
    vp8_py, h264_py = _rtp_py.Vp8Packetizer(mtu=MTU), _rtp_py.H264Packetizer(mtu=MTU)
    # Same packet budget for aiortc: its PACKET_MAX is the payload size limit.
    aiortc_vpx.PACKET_MAX = vp8_c.max_payload
    aiortc_h264.PACKET_MAX = h264_c.max_payload
    vp8_aiortc = aiortc_vpx.Vp8Encoder._packetize
    h264_aiortc = aiortc_h264.H264Encoder._packetize
    h264_split = aiortc_h264.H264Encoder._split_bitstream

    implementations = {
        "vp8": {"c": lambda f: vp8_c.packetize(f, 0, True),
                "py": lambda f: vp8_py.packetize(f, 0, True),
                "aiortc": lambda f: vp8_aiortc(f, 0)},
        "h264": {"c": lambda f: h264_c.packetize(f, 0, True),
                 "py": lambda f: h264_py.packetize(f, 0, True),
                 "aiortc": lambda f: h264_aiortc(h264_split(f))},
    }
    rows, figures = [], {}
    for name, frame in data.items():
        codec = name.split("_")[0]
        per_second = {}
        for impl, packetize in implementations[codec].items():
            count = len(packetize(frame))
            probe, _ = best_ns(lambda: packetize(frame), 3, 1)
            number = max(1, int(budget_ns / repeat / probe))
            faults = minor_faults()
            best, median = best_ns(lambda: packetize(frame), number, repeat)
            faults = (minor_faults() - faults) / (number * repeat)
            per_second[impl] = count / best * 1e9
            rows.append((name, impl, len(frame), count, best / 1000, median / 1000,
                         best / count, per_second[impl] / 1e6, faults))
        figures[f"{name}_vs_aiortc"] = per_second["c"] / per_second["aiortc"]
        figures[f"{name}_py_vs_aiortc"] = per_second["py"] / per_second["aiortc"]

    # One copy of the keyframe's bytes into a buffer allocated once: the floor.
    for name in ("vp8_key", "h264_key"):
        frame = data[name]
        destination = bytearray(len(frame))
        size = len(frame)

        def copy():
            destination[:size] = frame

        memcpy, _ = best_ns(copy, 2000 if quick else 20000, repeat)
        packetize = implementations[name.split("_")[0]]["c"]
        ours, _ = best_ns(lambda: packetize(frame), 2000 if quick else 20000, repeat)
        figures["vs_memcpy" if name == "vp8_key" else "h264_vs_memcpy"] = ours / memcpy
        rows.append((name, "memcpy", size, 1, memcpy / 1000, memcpy / 1000, memcpy, 0, 0))

    # Batches held by viewers (a queue of two frames per viewer, several viewers)
    # still reuse freed heap memory: glibc raises its mmap threshold after the
    # first free of an mmap'ed chunk, so page faults stay near zero.
    held = []

    def packetize_and_hold():
        held.append(vp8_c.packetize(data["vp8_key"], 0, True))
        if len(held) > 8:
            del held[0]

    faults = minor_faults()
    best, median = best_ns(packetize_and_hold, 500 if quick else 5000, repeat)
    count = len(held[0])
    faults = (minor_faults() - faults) / ((500 if quick else 5000) * repeat)
    rows.append(("vp8_key", "c, 8 held", KEYFRAME_SIZE, count, best / 1000, median / 1000,
                 best / count, count / best * 1e3, faults))
    figures["vp8_key_held_faults_per_frame"] = faults
    return rows, figures


def print_table(rows: list[tuple], figures: dict[str, float]) -> None:
    print(f"{'frame':<11} {'impl':<10} {'bytes':>7} {'pkts':>5} {'best µs':>9} "
          f"{'median µs':>10} {'ns/pkt':>8} {'Mpkt/s':>7} {'faults':>7}")
    for name, impl, size, count, best, median, per_packet, mpps, faults in rows:
        print(f"{name:<11} {impl:<10} {size:>7} {count:>5} {best:>9.2f} {median:>10.2f} "
              f"{per_packet:>8.1f} {mpps:>7.2f} {faults:>7.2f}")
    print()
    for key, value in figures.items():
        print(f"{key:<32} {value:8.2f}")


def main() -> None:
    args = timing.arguments(__doc__.splitlines()[0])
    rows, figures = run(args.quick)
    print_table(rows, figures)
    if args.json:
        timing.print_json(figures)


if __name__ == "__main__":
    main()
