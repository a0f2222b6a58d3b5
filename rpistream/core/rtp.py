"""RTP packetizers: the compiled module, or its pure-Python twin with RPISTREAM_NO_EXTENSIONS=1."""

from rpistream.core.native import NATIVE
from rpistream.core.rtp_format import (
    DEFAULT_HEADROOM,
    FLEXFEC_HEADROOM,
    MAX_EXT_ROOM,
    MAX_MTU,
    MIN_MTU,
    ONE_BYTE_EXT_HEADER,
    RED_HEADROOM,
    RTP_HEADER_SIZE,
    RTX_HEADROOM,
    ULPFEC_HEADROOM,
    ext_block_size,
    headroom,
)

if NATIVE:
    from rpistream.core._rtp import H264Packetizer, PacketBatch, Vp8Packetizer
else:
    from rpistream.core._rtp_py import H264Packetizer, PacketBatch, Vp8Packetizer

__all__ = [
    "Vp8Packetizer", "H264Packetizer", "PacketBatch", "RTP_HEADER_SIZE",
    "ONE_BYTE_EXT_HEADER", "MAX_EXT_ROOM", "RED_HEADROOM", "ULPFEC_HEADROOM",
    "FLEXFEC_HEADROOM", "RTX_HEADROOM", "DEFAULT_HEADROOM", "MIN_MTU", "MAX_MTU",
    "ext_block_size", "headroom",
]
