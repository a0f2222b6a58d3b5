"""The camera stack stays the system's: debian/camera_stack.py's plan and its
refusal of a virtualenv that shadows the system's numpy, and the one-line
explanation of a camera-stack import failure, on a real numpy ABI break.

The break is the one picamera2 users meet (simplejpeg built against numpy
1.24 under a virtualenv's numpy 2), reproduced with Debian 12's own python3-pywt,
also built against its numpy 1.24.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rpistream.sources import camera_stack

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "debian" / "camera_stack.py"
SYSTEM_PYTHON = "/usr/bin/python3"
NUMPY_2 = "numpy==2.4.6"  # a numpy 2, in front of the system's 1.24

pytestmark = pytest.mark.skipif(
    subprocess.run([SYSTEM_PYTHON, "-c", "import numpy, pywt"], capture_output=True).returncode,
    reason="needs Debian's python3-numpy and python3-pywt (scripts/setup.sh --test)")


def system(code: str) -> str:
    return subprocess.run([SYSTEM_PYTHON, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def run_script(*args) -> subprocess.CompletedProcess:
    return subprocess.run([SYSTEM_PYTHON, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, cwd=REPO)


@pytest.fixture(scope="module")
def numpy2_venv(tmp_path_factory) -> Path:
    """A virtualenv that sees the system's packages, with its own numpy 2 first."""
    venv = tmp_path_factory.mktemp("numpy2") / "venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True)
    subprocess.run([venv / "bin" / "pip", "install", "-q", NUMPY_2], check=True)
    return venv


def test_plan_depends_on_the_build_python_and_the_systems_numpy(tmp_path):
    requirements, substvars = tmp_path / "requirements.txt", tmp_path / "substvars"
    result = run_script("plan", REPO / "debian/requirements.txt", REPO / "pyproject.toml",
                        requirements, substvars)
    assert result.returncode == 0, result.stderr
    major, minor = map(int, system("import sys; print(*sys.version_info[:2])").split())
    depends = substvars.read_text().strip().removeprefix("rpistream:Depends=").split(", ")
    assert depends[:3] == [f"python3 (>= {major}.{minor})", f"python3 (<< {major}.{minor + 1})",
                           "python3-numpy (>= 1:1.24)"]
    bundled = {line.split("==")[0] for line in requirements.read_text().splitlines()
               if "==" in line}
    assert "numpy" not in bundled and "aiortc" in bundled
    system_av = system("import av; print(av.__version__)")
    if int(system_av.split(".")[0]) >= 14:  # trixie: the system's PyAV
        assert "av" not in bundled and "python3-av (>= 14)" in depends
    else:  # bookworm's 10.0: too old for aiortc, bundled
        assert "av" in bundled and not any(d.startswith("python3-av") for d in depends)


def test_plan_refuses_requirements_that_bundle_numpy(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("aiortc==1.16.0\nnumpy==2.4.6\n")
    result = run_script("plan", requirements, REPO / "pyproject.toml", tmp_path / "out",
                        tmp_path / "substvars")
    assert result.returncode == 1
    assert "pins numpy, which must come from the system" in result.stderr


def test_verify_refuses_a_virtualenv_shadowing_the_systems_numpy(numpy2_venv):
    result = run_script("verify", numpy2_venv, REPO / "pyproject.toml")
    assert result.returncode == 1
    system_numpy = system("import numpy; print(numpy.__version__)")
    assert (f"the virtualenv bundles numpy 2.4.6, which must come from the system "
            f"({system_numpy})") in result.stderr


def test_verify_accepts_a_virtualenv_on_the_systems_numpy(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True)
    result = run_script("verify", venv, REPO / "pyproject.toml")
    assert result.returncode == 0, result.stderr
    assert "numpy imports in the virtualenv" in result.stdout


def test_a_numpy_abi_break_is_explained_in_one_line(numpy2_venv):
    code = ("from rpistream.sources.camera_stack import explain\n"
            "try:\n    import pywt\n"
            "except Exception as exc:\n    print(explain(exc, 'pywt'))\n")
    result = subprocess.run([numpy2_venv / "bin" / "python", "-c", code], capture_output=True,
                            text=True, env={"PYTHONPATH": str(REPO)})
    (line,) = result.stdout.splitlines()
    # pywt's Python code imports its extension, whose C init raises.
    assert line.startswith("pywt cannot be imported: pywt failed: ValueError: numpy.dtype "
                           "size changed"), line
    assert (f"was built against another numpy than numpy 2.4.6 in {numpy2_venv}/lib/"
            f"python") in line
    assert "use the system's numpy (python3-numpy" in line


def test_a_missing_module_is_named_with_what_to_install():
    try:
        import libcamera  # noqa: F401 - absent here, as on Debian without Raspberry Pi OS
    except ModuleNotFoundError as exc:
        assert camera_stack.explain(exc) == (
            "picamera2 cannot be imported: libcamera is not installed: install "
            "python3-picamera2 from Raspberry Pi OS (sudo apt install python3-picamera2); a "
            "virtualenv needs --system-site-packages to see it")
    else:
        pytest.skip("libcamera's bindings are installed here")


def test_where_names_version_and_directory():
    numpy_dir = Path(sys.modules["numpy"].__file__ if "numpy" in sys.modules
                     else __import__("numpy").__file__).parent.parent
    assert camera_stack.where("numpy") == f"numpy {__import__('numpy').__version__} in {numpy_dir}"
    assert camera_stack.where("no_such_module_here") is None
