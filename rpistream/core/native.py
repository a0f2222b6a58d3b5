"""Whether the hot paths run compiled or as their pure-Python twins.

RPISTREAM_NO_EXTENSIONS=1 selects the twins (and setup.py then builds no
extension). Otherwise the compiled modules must import: a broken build is an
error, never a silent slowdown. Read once, here, by the selectors
(ring.py, rtp.py, fec.py), setup.py and the tests.
"""

import os

NATIVE = os.environ.get("RPISTREAM_NO_EXTENSIONS") != "1"
