"""simplejpeg's build as a distribution package makes it: replaces the sdist's
setup.py (which builds its bundled libjpeg-turbo with cmake, fetched from PyPI's
`cmake` package) for scripts/pi-root.sh.

The extension is cythonized with the root's Cython and compiled against the
root's own numpy headers, and links the system's libturbojpeg (Debian's
libturbojpeg0, 2.1.5 on bookworm and trixie; simplejpeg 1.6.6 bundles
2.1.5.1), as distributions link system libraries rather than embedded copies.
What matters for the proof is the numpy ABI: built against numpy 1.24 on
bookworm, this module fails to import under numpy 2 exactly as Raspberry Pi
OS's python3-simplejpeg does.
"""

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    name="simplejpeg",
    version="1.6.6",
    packages=["simplejpeg"],
    package_data={"simplejpeg": ["*.pyi"]},
    install_requires=["numpy"],
    ext_modules=cythonize([Extension(
        "simplejpeg._jpeg",
        ["simplejpeg/_jpeg.pyx", "simplejpeg/_color.c"],
        include_dirs=[numpy.get_include(), "simplejpeg"],
        libraries=["turbojpeg"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_19_API_VERSION")],
    )], language_level=3),
)
