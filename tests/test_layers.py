"""rpistream's packages depend one way (docs/DESIGN.md §2), and aiortc's
internals are reached only through webrtc/aiortc_internals.py, the module
whose self_check() names what a new aiortc release moved."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "rpistream"
# What each package may import from rpistream besides itself. server.py and
# cli.py, which build the process out of all of them, are not in a layer.
MAY_IMPORT = {
    "core": set(),
    "config": set(),
    "sources": {"core", "config"},
    "stream": {"core", "config", "sources", "record"},
    "webrtc": {"core", "config", "stream"},
    "record": {"core"},
    "monitor": {"core", "config", "stream", "webrtc"},
    "web": {"config", "webrtc", "monitor"},
}
INTERNALS = PACKAGE / "webrtc" / "aiortc_internals.py"


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, nested ones too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
                base = ".".join(parts[:len(parts) - node.level])
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module
            found.append((node.lineno, name))
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
    return found


def modules():
    return sorted(PACKAGE.rglob("*.py"))


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[0] == "rpistream" else None


def test_every_module_is_in_a_layer():
    loose = [p.name for p in PACKAGE.glob("*.py")
             if p.name not in ("__init__.py", "__main__.py", "cli.py", "server.py")]
    assert loose == [], "a module outside the layers of docs/DESIGN.md §2"
    assert {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()} \
        == set(MAY_IMPORT)


@pytest.mark.parametrize("path", [p for p in modules() if p.parent != PACKAGE],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    layer = path.relative_to(PACKAGE).parts[0]
    wrong = [f"line {line}: {name}" for line, name in imports(path)
             if (other := layer_of(name)) and other != layer
             and other not in MAY_IMPORT[layer] and other in MAY_IMPORT]
    assert wrong == [], f"{layer} may import only {sorted(MAY_IMPORT[layer])}"


@pytest.mark.parametrize("path", [p for p in modules() if p != INTERNALS],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_aiortc_internals_in_one_module(path):
    """aiortc's public API is what `import aiortc` exports; its submodules
    (aiortc.rtp, aiortc.sdp, ...) and aioice are internals."""
    private = [f"line {line}: {name}" for line, name in imports(path)
               if name.startswith(("aiortc.", "aioice"))
               and not (name.count(".") == 1 and name.split(".")[1][:1].isupper())]
    assert private == [], "use rpistream/webrtc/aiortc_internals.py"


def test_the_checks_see_a_wrong_import(tmp_path):
    """The parser finds what the tests above look for (else they pass vacuously)."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\ndef f():\n    from rpistream.webrtc import session\n"
                   "    from aiortc.rtp import RtcpSrPacket\n")
    found = imports(bad)
    assert (4, "rpistream.webrtc.session") in found and layer_of(found[1][1]) == "webrtc"
    assert (5, "aiortc.rtp") in found
