"""The hot path: the frame ring between a camera thread and the event loop, the
RTP packetizers and the FEC encoder, and the H.264 parsing they share.

Each of ring, rtp and fec is three things: its format (`*_format.py`: sizes,
bounds, checks and messages), two implementations of it that give the same
bytes (compiled from ext/rpistream/core/_*.pyx, and the pure-Python twin
`_*_py.py`), and a selector (`ring.py`, `rtp.py`, `fec.py`) that imports one
of them (core/native.py). Nothing here imports the rest of rpistream.
"""
