"""FEC encoder: the compiled module, or its pure-Python twin with RPISTREAM_NO_EXTENSIONS=1."""

from rpistream.core.fec_format import (
    DEFAULT_KIND,
    DEFAULT_RATE,
    MASK_KINDS,
    MAX_MEDIA_PACKETS,
    SCHEMES,
    fec_count,
    masks,
    rtp_header,
)
from rpistream.core.native import NATIVE

if NATIVE:
    from rpistream.core._fec import FecPayload, encode, xor_parity
else:
    from rpistream.core._fec_py import FecPayload, encode, xor_parity

__all__ = [
    "FecPayload", "encode", "masks", "fec_count", "rtp_header", "xor_parity", "SCHEMES",
    "MASK_KINDS", "MAX_MEDIA_PACKETS", "DEFAULT_RATE", "DEFAULT_KIND",
]
