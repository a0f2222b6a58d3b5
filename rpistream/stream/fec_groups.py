"""Which media packets each FEC packet protects: groups of whole frames, computed once per camera."""

from __future__ import annotations

from dataclasses import dataclass

from rpistream.core import fec

# Adaptive protection: FEC packets per media packet, from the worst loss the
# viewers of a scheme report. 3x the loss plus 5 % keeps most single losses
# per mask class repairable (interleaved masks: a class is 1/rate packets), from
# 10 % when the link is clean (a loss appears before the report shows it) to
# 50 % (beyond it FEC costs more than the picture it saves).
ADAPTIVE_SLOPE = 3.0
ADAPTIVE_BASE = 0.05
ADAPTIVE_MIN = 0.10
ADAPTIVE_MAX = 0.50


def adaptive_rate(loss: float) -> float:
    return min(ADAPTIVE_MAX, max(ADAPTIVE_MIN, ADAPTIVE_BASE + ADAPTIVE_SLOPE * loss))


@dataclass(frozen=True)
class FecGroup:
    """FEC for consecutive packets of `batches` (in order, whole frames, or
    `packets` = (first, end) of one large frame), shared by every viewer of
    its scheme."""

    scheme: str
    batches: tuple
    first: int  # index of the first protected packet in batches[0]
    count: int  # protected media packets
    payloads: list


class FecGrouper:
    """Collects whole frames into groups of at most 48 packets and
    `max_frames` frames, and encodes each group once.

    A group only ever ends at a frame boundary, so that the FEC packets sent
    after it never fall inside another group's run of sequence numbers (ULPFEC
    packets take media sequence numbers). A frame of more than 48 packets is
    split into groups of its own. A keyframe starts a new group: a viewer
    joining on it can use the FEC from its first frame.
    """

    def __init__(self, scheme: str, *, max_frames: int, kind: str = fec.DEFAULT_KIND):
        self.scheme = scheme
        self.kind = kind
        self.max_frames = max_frames
        self._pending: list = []
        self._pending_packets = 0
        self.groups = 0
        self.fec_packets = 0

    def add(self, batch, rate: float) -> tuple[list[FecGroup], list[FecGroup]]:
        """Groups to send before `batch` and groups to send after it."""
        before = []
        if self._pending and (batch.keyframe or
                              self._pending_packets + len(batch) > fec.MAX_MEDIA_PACKETS):
            before.append(self._close(rate))
        if len(batch) > fec.MAX_MEDIA_PACKETS:
            return before, self._split(batch, rate)
        self._pending.append(batch)
        self._pending_packets += len(batch)
        if len(self._pending) >= self.max_frames:
            return before, [self._close(rate)]
        return before, []

    def _close(self, rate: float) -> FecGroup:
        batches, self._pending, self._pending_packets = tuple(self._pending), [], 0
        packets = [batch.packet(i) for batch in batches for i in range(len(batch))]
        return self._encode(batches, 0, packets, rate)

    def _split(self, batch, rate: float) -> list[FecGroup]:
        """A large frame: groups of equal size (±1), each at most 48 packets."""
        total = len(batch)
        parts = -(-total // fec.MAX_MEDIA_PACKETS)
        groups, first = [], 0
        for part in range(parts):
            size = total // parts + (part < total % parts)
            packets = [batch.packet(i) for i in range(first, first + size)]
            groups.append(self._encode((batch,), first, packets, rate))
            first += size
        return groups

    def _encode(self, batches, first: int, packets: list, rate: float) -> FecGroup:
        count = len(packets)
        masks = fec.masks(count, fec.fec_count(count, rate), self.kind)
        payloads = fec.encode(self.scheme, packets, masks)
        self.groups += 1
        self.fec_packets += len(payloads)
        return FecGroup(self.scheme, batches, first, count, payloads)
