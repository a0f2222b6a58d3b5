"""Build the Cython extensions under ext/rpistream/core/ into rpistream.core.

A failed compile is an error. Set RPISTREAM_NO_EXTENSIONS=1 to skip the
extensions on purpose; rpistream then runs on its pure-Python twins.
"""

import glob
import os
import runpy

from setuptools import Extension, setup

# The one reading of RPISTREAM_NO_EXTENSIONS, run from its file: a PEP 517
# build does not put this directory on sys.path.
NATIVE = runpy.run_path(os.path.join("rpistream", "core", "native.py"))["NATIVE"]

EXT_DIR = os.path.join("ext", "rpistream", "core")


def extensions():
    if not NATIVE:
        return []
    from Cython.Build import cythonize

    exts = [
        Extension(
            "rpistream.core." + os.path.basename(pyx)[: -len(".pyx")],
            [pyx],
            include_dirs=[EXT_DIR],
            extra_compile_args=["-O2", "-Wall", "-Wno-unused-function"],
        )
        for pyx in sorted(glob.glob(os.path.join(EXT_DIR, "*.pyx")))
    ]
    return cythonize(
        exts,
        # include_path lets `cimport rpistream.core._ring` find ext/rpistream/core/_ring.pxd
        include_path=["ext"],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
        },
    )


setup(ext_modules=extensions())
