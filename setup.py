"""Build the Cython extensions under ext/rpistream/ into the rpistream package.

A failed compile is an error. Set RPISTREAM_NO_EXTENSIONS=1 to skip the
extensions on purpose; rpistream then runs on its pure-Python twins.
"""

import glob
import os

from setuptools import Extension, setup

NO_EXTENSIONS = os.environ.get("RPISTREAM_NO_EXTENSIONS") == "1"
EXT_DIR = os.path.join("ext", "rpistream")


def extensions():
    if NO_EXTENSIONS:
        return []
    from Cython.Build import cythonize

    exts = [
        Extension(
            "rpistream." + os.path.basename(pyx)[: -len(".pyx")],
            [pyx],
            include_dirs=[EXT_DIR],
            extra_compile_args=["-O2", "-Wall", "-Wno-unused-function"],
        )
        for pyx in sorted(glob.glob(os.path.join(EXT_DIR, "*.pyx")))
    ]
    return cythonize(
        exts,
        # include_path lets `cimport rpistream._ring` find ext/rpistream/_ring.pxd
        include_path=["ext"],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
        },
    )


setup(ext_modules=extensions())
