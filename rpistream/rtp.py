"""RTP packetizers: the compiled module, or its pure-Python twin with RPISTREAM_NO_EXTENSIONS=1."""

from rpistream._rtp_py import ext_block_size, headroom
from rpistream._select import implementation

_impl = implementation("_rtp")
Vp8Packetizer = _impl.Vp8Packetizer
H264Packetizer = _impl.H264Packetizer
PacketBatch = _impl.PacketBatch
RTP_HEADER_SIZE = _impl.RTP_HEADER_SIZE
ONE_BYTE_EXT_HEADER = _impl.ONE_BYTE_EXT_HEADER
MAX_EXT_ROOM = _impl.MAX_EXT_ROOM
RED_HEADROOM = _impl.RED_HEADROOM
ULPFEC_HEADROOM = _impl.ULPFEC_HEADROOM
FLEXFEC_HEADROOM = _impl.FLEXFEC_HEADROOM
RTX_HEADROOM = _impl.RTX_HEADROOM
DEFAULT_HEADROOM = _impl.DEFAULT_HEADROOM
MIN_MTU = _impl.MIN_MTU
MAX_MTU = _impl.MAX_MTU

__all__ = [
    "Vp8Packetizer", "H264Packetizer", "PacketBatch", "RTP_HEADER_SIZE",
    "ONE_BYTE_EXT_HEADER", "MAX_EXT_ROOM", "RED_HEADROOM", "ULPFEC_HEADROOM",
    "FLEXFEC_HEADROOM", "RTX_HEADROOM", "DEFAULT_HEADROOM", "MIN_MTU", "MAX_MTU",
    "ext_block_size", "headroom",
]
