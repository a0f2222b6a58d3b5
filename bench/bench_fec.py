"""Benchmark: FEC parity, compiled vs pure-Python twin vs numpy, and what FEC repairs.

A typical group: ten 1200-byte media packets laid out by the VP8 packetizer
(one frame). Timed per group, best of several runs:

- xor_parity: the parity core, the XOR of the ten packets;
- encode: the whole camera-wide job at the default rate (three ULPFEC payloads
  with headers, each XORing its interleaved class), and with one FEC packet
  protecting all ten;
- numpy: np.bitwise_xor.reduce over the same packets, stacked from the same
  buffers into one array on every call and the parity made bytes (what a
  Python caller holding separate packets must do), and over an array stacked
  once beforehand, timing the XOR reduce alone (numpy's best case);
- memcpy: one copy of the same 12,000 bytes into a buffer allocated once;
- per viewer: FecPayload.write(), and write_packet() for a RED-wrapped packet.

Then a loss simulation: groups of ten sent to one viewer as RED + ULPFEC at the
default rate and masks, every packet (media or FEC) lost independently at 5 %
and 10 %; the test suite's receiver (tests/fec_decoder.py) restores what it can,
byte-checked against the packets as sent.

    python bench/bench_fec.py [--quick] [--json]

--json prints one JSON object as the last line: parity_gbps (GB/s of protected
input through encode()), vs_numpy (numpy's time ÷ ours for the parity of the
same packets, numpy stacking them on every call), vs_numpy_prestacked (the
same against the pre-stacked array), vs_memcpy (our parity time ÷ one memcpy
of the same bytes), and recovered_pct_5 / recovered_pct_10 (share of lost
media packets restored).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import fec_decoder  # noqa: E402  (the tests' independent receiver)

from rpistream.core import _fec, _fec_py, _rtp, fec_format, rtp_format  # noqa: E402

import timing  # noqa: E402
from timing import best_ns  # noqa: E402

PACKETS, PACKET_SIZE = 10, 1200
RED_PT, ULPFEC_PT, MEDIA_PT, SSRC = 100, 101, 96, 0x1234ABCD


def group() -> list[memoryview]:
    """Ten 1200-byte packets of one frame, as the packetizer lays them out."""
    packetizer = _rtp.Vp8Packetizer(mtu=PACKET_SIZE + rtp_format.DEFAULT_HEADROOM)
    frame = random.Random(7).randbytes(PACKETS * (packetizer.max_payload - 4))
    batch = packetizer.packetize(frame, 90_000, False)
    packets = [batch.packet(i) for i in range(len(batch))]
    assert len(packets) == PACKETS and {len(p) for p in packets} == {PACKET_SIZE}
    return packets


def timed(call, budget_ns: float, repeat: int) -> tuple[float, float]:
    probe, _ = best_ns(call, 20, 1)
    return best_ns(call, max(1, int(budget_ns / repeat / probe)), repeat)


def simulate(loss: float, groups: int, seed: int) -> float:
    """Share of lost media packets restored at random loss `loss`."""
    rng = random.Random(seed)
    packetizer = _rtp.Vp8Packetizer(mtu=PACKET_SIZE + rtp_format.DEFAULT_HEADROOM)
    frame = rng.randbytes(PACKETS * (packetizer.max_payload - 4))
    batch = packetizer.packetize(frame, 90_000, False)
    masks = fec_format.masks(PACKETS, fec_format.fec_count(PACKETS))
    payloads = _fec.encode("ulpfec", [batch.packet(i) for i in range(PACKETS)], masks)
    seq = 65530
    media = [batch.write_red(i, RED_PT, MEDIA_PT, SSRC, (seq + i) & 0xFFFF)
             for i in range(PACKETS)]
    expected = {(seq + i) & 0xFFFF: batch.write(i, MEDIA_PT, SSRC, (seq + i) & 0xFFFF)
                for i in range(PACKETS)}
    fec = [payload.write_packet(fec_format.rtp_header(RED_PT, (seq + PACKETS + j) & 0xFFFF,
                                                batch.timestamp, SSRC),
                                seq, SSRC, MEDIA_PT, red_block_type=ULPFEC_PT)
           for j, payload in enumerate(payloads)]
    lost_total = restored_total = 0
    for _ in range(groups):
        receiver = fec_decoder.Receiver(SSRC, red_payload_type=RED_PT,
                                        ulpfec_payload_type=ULPFEC_PT)
        lost = 0
        for number, packet in enumerate(media + fec):
            if rng.random() < loss:
                lost += number < PACKETS
            else:
                receiver.receive(packet)
        restored = receiver.recover()
        assert all(packet == expected[seq] for seq, packet in restored.items())
        lost_total += lost
        restored_total += len(restored)
    return 100 * restored_total / max(lost_total, 1)


def run(quick: bool) -> tuple[list[tuple], dict[str, float]]:
    packets = group()
    size = sum(len(p) for p in packets)
    repeat = 7 if quick else 15
    budget_ns = 300_000_000 if quick else 1_000_000_000  # per row, roughly
    masks = fec_format.masks(PACKETS, fec_format.fec_count(PACKETS))
    everything = [(1 << PACKETS) - 1]
    stacked = np.stack([np.frombuffer(p, np.uint8) for p in packets])
    destination = bytearray(size)
    source = b"".join(packets)
    payload = _fec.encode("ulpfec", packets, masks)[0]
    header = fec_format.rtp_header(RED_PT, 1, 2, SSRC)
    calls = {
        ("xor_parity", "c"): lambda: _fec.xor_parity(packets),
        ("xor_parity", "py"): lambda: _fec_py.xor_parity(packets),
        ("xor_parity", "numpy"): lambda: np.bitwise_xor.reduce(
            np.stack([np.frombuffer(p, np.uint8) for p in packets])).tobytes(),
        ("xor_parity", "numpy pre-stacked"): lambda: np.bitwise_xor.reduce(stacked),
        ("memcpy", "bytearray[:]="): lambda: destination.__setitem__(slice(None), source),
        ("encode 3 FEC", "c"): lambda: _fec.encode("ulpfec", packets, masks),
        ("encode 3 FEC", "py"): lambda: _fec_py.encode("ulpfec", packets, masks),
        ("encode 1 FEC", "c"): lambda: _fec.encode("ulpfec", packets, everything),
        ("encode 3 FlexFEC", "c"): lambda: _fec.encode("flexfec-03", packets, masks),
        ("write", "c"): lambda: payload.write(1, SSRC, MEDIA_PT, b""),
        ("write_packet RED", "c"): lambda: payload.write_packet(header, 1, SSRC, MEDIA_PT, b"",
                                                                 ULPFEC_PT),
    }
    rows, times = [], {}
    for (name, impl), call in calls.items():
        budget = budget_ns / 5 if impl == "py" else budget_ns
        best, median = timed(call, budget, repeat)
        times[name, impl] = best
        per_viewer = name.startswith("write")
        nbytes = len(payload) if per_viewer else size
        rows.append((name, impl, nbytes, best / 1000, median / 1000, nbytes / best))
    parity = times["xor_parity", "c"]
    figures = {
        "parity_gbps": size / times["encode 3 FEC", "c"],
        "xor_parity_gbps": size / parity,
        "vs_numpy": times["xor_parity", "numpy"] / parity,
        "vs_numpy_prestacked": times["xor_parity", "numpy pre-stacked"] / parity,
        "vs_memcpy": parity / times["memcpy", "bytearray[:]="],
        "encode_vs_memcpy": times["encode 3 FEC", "c"] / times["memcpy", "bytearray[:]="],
        "encode_c_vs_py": times["encode 3 FEC", "py"] / times["encode 3 FEC", "c"],
        "write_ns": times["write", "c"],
        "write_packet_red_ns": times["write_packet RED", "c"],
    }
    groups = 1500 if quick else 10_000
    figures["recovered_pct_5"] = simulate(0.05, groups, 5)
    figures["recovered_pct_10"] = simulate(0.10, groups, 10)
    return rows, figures


def print_table(rows: list[tuple], figures: dict[str, float]) -> None:
    print(f"{'job (10 x 1200 B group)':<22} {'impl':<18} {'bytes':>6} {'best µs':>9} "
          f"{'median µs':>10} {'GB/s':>7}")
    for name, impl, nbytes, best, median, gbps in rows:
        print(f"{name:<22} {impl:<18} {nbytes:>6} {best:>9.3f} {median:>10.3f} {gbps:>7.2f}")
    print()
    for key, value in figures.items():
        print(f"{key:<24} {value:10.2f}")


def main() -> None:
    args = timing.arguments(__doc__.splitlines()[0])
    rows, figures = run(args.quick)
    print_table(rows, figures)
    if args.json:
        timing.print_json(figures)


if __name__ == "__main__":
    main()
