import importlib
import os

import pytest

NO_EXTENSIONS = os.environ.get("RPISTREAM_NO_EXTENSIONS") == "1"


def load_twin(name: str, which: str):
    """`rpistream.<name>` for "c", `rpistream.<name>_py` for "py".

    The compiled module must import unless RPISTREAM_NO_EXTENSIONS=1: a broken
    build fails the tests instead of quietly testing only the twin.
    """
    if which == "c":
        if NO_EXTENSIONS:
            pytest.skip("RPISTREAM_NO_EXTENSIONS=1: compiled modules are not built")
        return importlib.import_module(f"rpistream.{name}")
    return importlib.import_module(f"rpistream.{name}_py")


@pytest.fixture(params=["c", "py"])
def ring_impl(request):
    """The compiled FrameRing module, then its pure-Python twin."""
    return load_twin("_ring", request.param)
