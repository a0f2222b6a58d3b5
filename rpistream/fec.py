"""FEC encoder: the compiled module, or its pure-Python twin with RPISTREAM_NO_EXTENSIONS=1."""

from rpistream._select import implementation

_impl = implementation("_fec")
FecPayload = _impl.FecPayload
encode = _impl.encode
masks = _impl.masks
fec_count = _impl.fec_count
rtp_header = _impl.rtp_header
xor_parity = _impl.xor_parity
SCHEMES = _impl.SCHEMES
MASK_KINDS = _impl.MASK_KINDS
MAX_MEDIA_PACKETS = _impl.MAX_MEDIA_PACKETS
DEFAULT_RATE = _impl.DEFAULT_RATE
DEFAULT_KIND = _impl.DEFAULT_KIND

__all__ = [
    "FecPayload", "encode", "masks", "fec_count", "rtp_header", "xor_parity", "SCHEMES",
    "MASK_KINDS", "MAX_MEDIA_PACKETS", "DEFAULT_RATE", "DEFAULT_KIND",
]
