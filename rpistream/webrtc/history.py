"""Bounded record of the packets a viewer sent, for answering NACKs."""

from __future__ import annotations


class PacketHistory:
    """The last `size` packets sent, by sequence number.

    A packet is kept as a reference to its frame's batch and its index in it
    (the batch is shared by every viewer, so the history costs no copies), in
    a fixed array indexed by sequence number modulo `size`: storing a packet
    overwrites the one sent `size` packets earlier.
    """

    __slots__ = ("_size", "_seqs", "_batches", "_indices")

    def __init__(self, size: int):
        self._size = size
        self._seqs = [-1] * size
        self._batches: list[object] = [None] * size
        self._indices = [0] * size

    def store(self, seq: int, batch, index: int) -> None:
        slot = seq % self._size
        self._seqs[slot] = seq
        self._batches[slot] = batch
        self._indices[slot] = index

    def lookup(self, seq: int):
        """(batch, index) of packet `seq`, or None if it is too old or never sent."""
        slot = seq % self._size
        if self._seqs[slot] != seq:
            return None
        return self._batches[slot], self._indices[slot]

    def clear(self) -> None:
        self._seqs = [-1] * self._size
        self._batches = [None] * self._size

    def held_batches(self) -> int:
        """Distinct frame batches the history keeps alive."""
        return len({id(b) for b in self._batches if b is not None})

    def held(self) -> dict:
        """The distinct batches the history keeps alive, by id: what a NACK
        can still be answered from, and memory that stays allocated because of it."""
        held = dict(zip(map(id, self._batches), self._batches))
        held.pop(id(None), None)
        return held
