import importlib
import importlib.machinery
import os
import sys
from pathlib import Path

import pytest

from rpistream.core.native import NATIVE

NO_EXTENSIONS = not NATIVE
# Property tests draw fewer examples under emulation (scripts/prove-pi.sh sets
# RPISTREAM_EXAMPLES_SCALE for arm64 under qemu): the same properties, checked
# on a smaller sample, in a time the test command can afford.
EXAMPLES_SCALE = float(os.environ.get("RPISTREAM_EXAMPLES_SCALE", "1"))


# The implementations each hot-path test runs against: the compiled module,
# then its pure-Python twin. Under emulation (scripts/prove-pi.sh sets
# RPISTREAM_COMPILED_ONLY=1 for arm64 under qemu) only the compiled one, the
# part that differs by architecture: the twins are the same Python everywhere
# and run natively in the main test run, and the tests that check the
# compiled output against the twin's are not parametrized and still run.
IMPLEMENTATIONS = ("c",) if os.environ.get("RPISTREAM_COMPILED_ONLY") == "1" else ("c", "py")


def examples(count: int) -> int:
    """Hypothesis's max_examples for a test that draws `count` natively."""
    return max(10, round(count * EXAMPLES_SCALE))
# Hypothesis draws integers of thousands of digits for the config fuzzing and
# prints them when it reports an example; Python's guard against slow int→str
# conversions would turn that report into a crash.
sys.set_int_max_str_digits(0)


def load_twin(name: str, which: str):
    """`rpistream.core.<name>` for "c", `rpistream.core.<name>_py` for "py".

    The compiled module must import unless RPISTREAM_NO_EXTENSIONS=1: a broken
    build fails the tests instead of quietly testing only the twin.
    """
    if which == "c":
        if NO_EXTENSIONS:
            pytest.skip("RPISTREAM_NO_EXTENSIONS=1: compiled modules are not built")
        return importlib.import_module(f"rpistream.core.{name}")
    return importlib.import_module(f"rpistream.core.{name}_py")


def compiled_to_compare(name: str):
    """`rpistream.core.<name>`, the compiled module, to check against its twin.

    Loaded whenever it is importable, RPISTREAM_NO_EXTENSIONS=1 or not: that
    setting chooses what the server runs, not what is built in the tree. When
    it is not importable: a skip saying so under RPISTREAM_NO_EXTENSIONS=1 (a
    tree without extensions built), a failure otherwise (a broken build), as
    `load_twin` does.
    """
    try:
        module = importlib.import_module(f"rpistream.core.{name}")
    except ImportError as exc:
        if NO_EXTENSIONS:
            pytest.skip(f"the compiled rpistream.core.{name} does not import ({exc}): nothing to "
                        f"compare its pure-Python twin with")
        raise
    # An agreement test must compare two implementations, not the twin with itself.
    assert module.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), \
        f"rpistream.core.{name} is not a compiled extension: {module.__file__}"
    return module


@pytest.fixture(params=IMPLEMENTATIONS)
def ring_impl(request):
    """The compiled FrameRing module, then its pure-Python twin."""
    return load_twin("_ring", request.param)


@pytest.fixture
def standin(monkeypatch):
    """picamera2's stand-in (tests/picamera2_standin/) on sys.path for this test only."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "picamera2_standin"))
    import picamera2.picamera2 as camera_module
    monkeypatch.setattr(camera_module, "STANDIN_CAMERAS", list(camera_module.STANDIN_CAMERAS))
    yield camera_module
    camera_module.STANDIN_FAULTS.release_hang()  # a stop a test left hanging ends
    for name in [n for n in sys.modules if n.split(".")[0] in ("picamera2", "libcamera")]:
        del sys.modules[name]
