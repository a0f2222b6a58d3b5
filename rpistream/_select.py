"""Choose a compiled extension or its pure-Python twin.

RPISTREAM_NO_EXTENSIONS=1 selects the twins. Otherwise the extension must
import: a broken build is an error, never a silent slowdown.
"""

import importlib
import os

NO_EXTENSIONS = os.environ.get("RPISTREAM_NO_EXTENSIONS") == "1"


def implementation(name: str):
    """The module `rpistream.<name>` (compiled) or `rpistream.<name>_py`."""
    return importlib.import_module(f"rpistream.{name}_py" if NO_EXTENSIONS else f"rpistream.{name}")
