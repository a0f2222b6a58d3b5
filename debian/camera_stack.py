#!/usr/bin/python3
"""Which Python packages rpistream's virtualenv bundles, and which it takes
from the system, so that it never breaks the system's camera stack.

Raspberry Pi OS installs picamera2 system-wide, beside C extensions built
against the system's numpy (simplejpeg, which picamera2 imports) and
libcamera's bindings. rpistream's virtualenv sees the system's packages
(--use-system-packages), but whatever it installs itself comes first on the
path. A numpy 2 there makes simplejpeg, built against numpy 1.24 on bookworm,
fail at import with "numpy.dtype size changed, may indicate binary
incompatibility" (picamera2 issues #1088 and #1211). So:

- numpy is never bundled: the package depends on python3-numpy, whose C API
  the system's extensions were built against.
- PyAV comes from the system (python3-av) where its version is in the range
  rpistream needs (aiortc's: trixie's 14.2 is); elsewhere (bookworm's 10.0 is
  too old) the virtualenv bundles its own, which then comes first for
  picamera2's libav encoders too. That is safe for the ABI: nothing links
  against PyAV's C API, picamera2 uses its Python API, and the package proof
  runs picamera2's LibavH264Encoder against the bundled PyAV.
- The rest of the camera stack (picamera2, simplejpeg, libcamera, pidng,
  prctl, v4l2, PIL, ...) rpistream does not need: never bundled.

    camera_stack.py plan REQUIREMENTS PYPROJECT OUT_REQUIREMENTS SUBSTVARS
        Writes the requirements to bundle (REQUIREMENTS less what the system
        provides) and appends rpistream:Depends (the build's Python, numpy,
        PyAV where it is the system's) to SUBSTVARS.
    camera_stack.py verify VENV PYPROJECT
        Refuses (exit 1, naming the package and why) a built virtualenv that
        bundles a camera-stack package the system provides, or in which a
        camera-stack module that imports with the system's Python fails.

Run with the Python the package is built for (/usr/bin/python3): its version
and its system packages are the ones the package will meet.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib

# Distributions (PyPI names, lower case) of the camera stack rpistream must
# never bundle: the system's copies are what the system's picamera2 and its
# extensions were built and tested with.
NEVER_BUNDLED = {"numpy", "picamera2", "simplejpeg", "pidng", "python-prctl",
                 "v4l2-python3", "videodev2", "pillow", "piexif", "libarchive-c"}
# Bundled only where the system's copy is outside the range rpistream needs.
SYSTEM_IF_IN_RANGE = {"av": "python3-av"}
# The Debian packages of the system copies rpistream always uses, and the
# epoch Debian gives their versions.
ALWAYS_SYSTEM = {"numpy": ("python3-numpy", "1:")}
# Modules of the camera stack checked to import in the built virtualenv
# wherever they import with the system's Python, in import order.
CAMERA_MODULES = ("numpy", "simplejpeg", "libcamera", "av", "picamera2")


def requirement_ranges(pyproject: str) -> dict[str, list[tuple[str, str]]]:
    """{name: [(operator, version), ...]} of pyproject's dependencies."""
    with open(pyproject, "rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    ranges = {}
    for dependency in dependencies:
        name, specifiers = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", dependency).groups()
        ranges[name.lower()] = [re.fullmatch(r"(>=|<|==)\s*([0-9.]+)", s.strip()).groups()
                                for s in specifiers.split(",") if s.strip()]
    return ranges


def release(version: str) -> tuple[int, ...]:
    """The numeric release of a version: "14.2.0" -> (14, 2, 0); "2.2.4+ds" -> (2, 2, 4)."""
    return tuple(int(part) for part in re.match(r"[0-9]+(?:\.[0-9]+)*", version)[0].split("."))


def in_range(version: str, specifiers: list[tuple[str, str]]) -> bool:
    have = release(version)
    checks = {">=": lambda want: have >= want, "<": lambda want: have < want,
              "==": lambda want: have == want}
    return all(checks[op](release(bound)) for op, bound in specifiers)


def system_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def debian_range(package: str, specifiers, epoch: str = "") -> list[str]:
    operators = {">=": ">=", "<": "<<", "==": "="}
    return [f"{package} ({operators[op]} {epoch}{bound})" for op, bound in specifiers]


def plan(requirements: str, pyproject: str, out_requirements: str, substvars: str) -> None:
    ranges = requirement_ranges(pyproject)
    major, minor = sys.version_info[:2]
    # The virtualenv's interpreter is /usr/bin/python3 and its site-packages
    # are named after this minor version: another Python cannot run it.
    depends = [f"python3 (>= {major}.{minor})", f"python3 (<< {major}.{minor + 1})"]
    for name, (package, epoch) in ALWAYS_SYSTEM.items():
        version = system_version(name)
        if version is None or not in_range(version, ranges[name]):
            sys.exit(f"camera_stack: the system's {name} is {version or 'not installed'}; "
                     f"rpistream needs {name} {ranges[name]} from {package}: install it "
                     f"(it is in debian/control's Build-Depends)")
        depends += debian_range(package, ranges[name], epoch)
    bundle_anyway = set()
    for name, package in SYSTEM_IF_IN_RANGE.items():
        version = system_version(name)
        if version is not None and in_range(version, ranges[name]):
            depends += debian_range(package, ranges[name])
            print(f"camera_stack: {name} {version} from {package}, the system's")
        else:
            bundle_anyway.add(name)
            print(f"camera_stack: {name} bundled: the system's is "
                  f"{version or 'not installed'}, rpistream needs {ranges[name]}")
    kept = []
    with open(requirements) as f:
        for line in f:
            name = re.match(r"[A-Za-z0-9_.-]*", line.strip())[0].lower()
            if name in NEVER_BUNDLED:
                sys.exit(f"camera_stack: {requirements} pins {name}, which must come from "
                         f"the system: remove it")
            if name in SYSTEM_IF_IN_RANGE and name not in bundle_anyway:
                continue
            kept.append(line)
    with open(out_requirements, "w") as f:
        f.writelines(kept)
    with open(substvars, "a") as f:
        f.write("rpistream:Depends=" + ", ".join(depends) + "\n")
    print("camera_stack: rpistream:Depends=" + ", ".join(depends))


def imports(python: str, module: str) -> str | None:
    """None if `module` imports with `python`, else the last line of the error."""
    result = subprocess.run([python, "-c", f"import {module}"], capture_output=True,
                            text=True, timeout=120)  # picamera2 starts libcamera
    if result.returncode == 0:
        return None
    lines = result.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {result.returncode}"


def verify(venv: str, pyproject: str) -> None:
    ranges = requirement_ranges(pyproject)
    site = f"{venv}/lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages"
    bundled = {dist.metadata["Name"].lower(): dist.version
               for dist in importlib.metadata.distributions(path=[site])}
    problems = []
    for name in sorted(bundled.keys() & NEVER_BUNDLED):
        problems.append(f"the virtualenv bundles {name} {bundled[name]}, which must come from "
                        f"the system ({system_version(name) or 'not installed here'})")
    for name in sorted(bundled.keys() & SYSTEM_IF_IN_RANGE.keys()):
        system = system_version(name)
        if system is None:
            continue
        if in_range(system, ranges[name]):
            problems.append(f"the virtualenv bundles {name} {bundled[name]} in front of the "
                            f"system's {system}, which rpistream can use")
        else:
            print(f"camera_stack: the virtualenv's {name} {bundled[name]} comes before the "
                  f"system's {system} (outside {ranges[name]})")
    for module in CAMERA_MODULES:
        if imports(sys.executable, module) is not None:
            continue  # not on this system: nothing to break
        error = imports(f"{venv}/bin/python", module)
        if error is not None:
            problems.append(f"{module} imports with the system's Python but not in the "
                            f"virtualenv: {error}")
        else:
            print(f"camera_stack: {module} imports in the virtualenv")
    if problems:
        sys.exit("camera_stack: refusing this virtualenv: it would break the system's camera "
                 "stack:\n  " + "\n  ".join(problems))


def main() -> None:
    command, *args = sys.argv[1:] or [""]
    if command == "plan" and len(args) == 4:
        plan(*args)
    elif command == "verify" and len(args) == 2:
        verify(*args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
