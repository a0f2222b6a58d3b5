"""The example renderer: config.example.toml, generated from the schema.

`python -m rpistream.config > config.example.toml` writes it; a test checks
that the file in the repository is what this renders, so it cannot drift.
"""

from __future__ import annotations

import dataclasses
import textwrap

from rpistream.config.loader import DEFAULT_CONFIG_PATH
from rpistream.config.schema import (KEYS_BY_TYPE, SOURCE_OPTIONS, CameraConfig, Config,
                                     ForwardConfig, RecordConfig)
from rpistream.config.values import REQUIRED, default_of, schema


def _comment(text: str, width: int = 79) -> list[str]:
    return textwrap.wrap(text, width, initial_indent="# ", subsequent_indent="# ",
                         break_on_hyphens=False)


def _describe(f: dataclasses.Field, k: str) -> list[str]:
    """The comment block and commented-out assignment of one key."""
    meta = f.metadata
    default = default_of(f)
    if meta["default_text"]:
        default_text = meta["default_text"]
    elif default is REQUIRED:
        default_text = "none, required"
    elif default is None:
        default_text = "not set"
    elif default == ():
        default_text = "[] (none)"
    else:
        default_text = meta["type"].toml(default)
    lines = _comment(meta["help"])
    lines += _comment(f"Allowed: {meta['type'].allowed}. Default: {default_text}.")
    shown = meta["example"] if meta["example"] is not REQUIRED else default
    if shown is not None and shown is not REQUIRED:
        lines.append(f"#{k} = {meta['type'].toml(shown)}")
    return lines


def example_config() -> str:
    """config.example.toml: every key, commented out, with help, allowed
    values and default. Generated, so it cannot drift from the schema."""
    out = [
        "# rpistream configuration (TOML).",
        "#",
        *_comment(
            f"rpistream reads {DEFAULT_CONFIG_PATH}, or the file given with "
            "--config. Every key is shown commented out with its default, or an "
            "example where it has none; only a camera's source and a file camera's "
            "path are required. Unknown keys are errors, so a typo is reported "
            "rather than ignored. Check a file with `rpistream check --config "
            "FILE`. Generated from rpistream/config/schema.py: "
            "python -m rpistream.config > config.example.toml"),
    ]
    for section_key, section in schema(Config).items():
        out += ["", ""]
        if section_key == "camera":
            # Uncommenting every line gives a valid config: a picamera2 camera
            # with every key, then one more camera per source with options.
            out += _comment(section.metadata["help"])
            out += _comment("Allowed: " + section.metadata["type"].allowed + ".")
            out += ["#", "#[[camera]]"]
            first = schema(CameraConfig)["source"].metadata["example"]
            for k, f in schema(CameraConfig).items():
                if k not in ("options", "record", "forward"):
                    out += ["#", *_describe(f, k)]
            out += ["#", *_comment("Recording goes in a [camera.record] table after the "
                                   "camera's other keys:"), "#[camera.record]"]
            for k, f in schema(RecordConfig).items():
                out += ["#", *_describe(f, k)]
            out += ["#", *_comment("Each forward to an SFU is a [[camera.forward]] table "
                                   "after the camera's other keys; any number:")]
            forward_keys = schema(ForwardConfig)
            for kind, names in KEYS_BY_TYPE.items():
                out += ["#[[camera.forward]]"]
                if kind == "rtp":
                    out += ["#", *_describe(forward_keys["type"], "type")]
                else:
                    out += [f'#type = "{kind}"']
                for k in names:
                    out += ["#", *_describe(forward_keys[k], k)]
                out += ["#"]
            out.pop()
            out += ["#", *_comment(
                "Options of the camera's source go in a [camera.options] table after "
                "the camera's other keys; each source has its own:")]
            for source, cls in SOURCE_OPTIONS.items():
                keys = schema(cls)
                if not keys:
                    out += ["#", *_comment(f'source = "{source}": {cls.__doc__.strip()}')]
                    continue
                out += ["#", *_comment(f'source = "{source}":')]
                if source != first:
                    out += ["#[[camera]]", f'#name = "{source}"', f'#source = "{source}"']
                out += ["#[camera.options]"]
                for k, f in keys.items():
                    out += ["#", *_describe(f, k)]
        else:
            out += _comment(f"[{section_key}]: {section.metadata['help']}")
            out += ["#", f"#[{section_key}]"]
            for k, f in schema(section.metadata["type"].cls).items():
                out += ["#", *_describe(f, k)]
    return "\n".join(out) + "\n"
