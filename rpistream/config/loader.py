"""The loader: TOML file + command-line overrides -> a validated, frozen `Config`.

Every problem is collected before anything is raised: a `ConfigError` lists
them all, one per line, each naming the key path (`camera[1].fps`), the bad
value and what is allowed. Problems with the file itself (missing, not UTF-8,
not TOML) and with the token file are ConfigErrors too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from typing import Any, Mapping

from rpistream.config.schema import SOURCE_OPTIONS, CameraConfig, Config
from rpistream.config.values import ConfigError, Table, Walk, schema, show

DEFAULT_CONFIG_PATH = "/etc/rpistream/config.toml"


def parse_config(data: dict, source: str = "<config>", *,
                 labels: Mapping[str, str] | None = None) -> Config:
    """Validate parsed TOML `data` into a `Config`, or raise a `ConfigError`
    listing every problem. `labels` maps key paths to the names the user
    typed them as, e.g. {"camera": "--camera", "server.port": "--port"}."""
    walk = Walk(labels or {})
    config = Table(Config).parse(data, "", walk, {})
    if walk.errors:
        raise ConfigError(source, walk.errors)
    return config


def resolve_config_path(path: str | None) -> str | None:
    """The file to read: `path`, else DEFAULT_CONFIG_PATH if it exists, else
    None (built-in defaults)."""
    if path is not None:
        return path
    return DEFAULT_CONFIG_PATH if os.path.exists(DEFAULT_CONFIG_PATH) else None


def read_toml(path: str) -> dict:
    """The parsed file, or a ConfigError naming the file, line and column."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(path, ["no such file"]) from None
    except OSError as e:
        raise ConfigError(path, [f"cannot read it: {e.strerror}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError(path, [f"line {line}: not UTF-8 text, as TOML requires"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # Python 3.11's TOMLDecodeError has no lineno/colno attributes: the
        # position is only in the message, as "(at line L, column C)".
        message = str(e)
        m = re.search(r" \(at line (\d+), column (\d+)\)$", message)
        if m:
            line, col, message = m[1], m[2], message[:m.start()]
        else:
            message = message.replace(" (at end of document)", "")
            lines = text.split("\n")
            line, col = len(lines), len(lines[-1]) + 1
        raise ConfigError(path, [f"line {line}, column {col}: invalid TOML: {message}"]) from None


def merge(base: dict, overrides: Mapping) -> dict:
    """`base` with `overrides` applied: tables merge key by key, anything else
    (arrays included: `--camera` replaces all cameras) is replaced."""
    out = dict(base)
    for k, v in overrides.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(path: str | None = None, overrides: dict | None = None, *,
                labels: Mapping[str, str] | None = None) -> Config:
    """Read `path` (default: DEFAULT_CONFIG_PATH if it exists, else built-in
    defaults), apply `overrides` (same shape as the file; they win) and
    validate. Raises ConfigError."""
    path = resolve_config_path(path)
    data = read_toml(path) if path is not None else {}
    source = path or "the built-in defaults"
    if overrides:
        data = merge(data, overrides)
        source += " and the command line"
    return read_secrets(parse_config(data, source, labels=labels), source)


def read_secrets(config: Config, source: str) -> Config:
    """`config` with the secrets its files hold: the access token (unless
    the config gives one), each TURN server's shared secret and each WHIP
    forward's bearer token."""
    server = config.server
    if server.token is None and server.token_file is not None:
        server = dataclasses.replace(server, token=read_secret_file(
            server.token_file, "server.token_file", "a token", source))
    server = dataclasses.replace(server, ice_servers=tuple(
        dataclasses.replace(ice, secret=read_secret_file(
            ice.secret_file, f"server.ice_servers[{i}].secret_file", "a TURN secret", source))
        if ice.secret_file is not None else ice
        for i, ice in enumerate(server.ice_servers)))
    cameras = tuple(dataclasses.replace(camera, forward=tuple(
        dataclasses.replace(forward, bearer_token=read_secret_file(
            forward.bearer_token_file, f"camera[{c}].forward[{i}].bearer_token_file",
            "a bearer token", source))
        if forward.bearer_token_file is not None else forward
        for i, forward in enumerate(camera.forward))) for c, camera in enumerate(config.cameras))
    return dataclasses.replace(config, server=server, cameras=cameras)


# A token or a shared secret this short could be guessed, or found from
# credentials minted with it by trying every value.
SECRET_MIN_CHARACTERS = 16


def read_secret_file(path: str, key: str, what: str, source: str) -> str:
    """The secret in `path` (surrounding white space removed), or a
    ConfigError saying what is wrong with the file. The secret itself never
    appears in a message."""
    where = f"{key} = {show(path, 200)}"
    try:
        with open(path, encoding="utf-8") as f:
            secret = f.read().strip()
    except OSError as e:
        raise ConfigError(source, [f"{where}: cannot read it: {e.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(source, [f"{where}: not UTF-8 text"]) from None
    if len(secret) < SECRET_MIN_CHARACTERS:
        raise ConfigError(source, [f"{where}: holds {len(secret)} characters; {what} needs "
                                   f"at least {SECRET_MIN_CHARACTERS}"])
    return secret


def parse_camera_spec(spec: str) -> dict:
    """`--camera SOURCE[:key=value,...]` -> a [[camera]] table.

    Camera keys stay top-level, other keys go to `options`; each value is
    read as the schema's type for its key, and a value that does not read
    stays a string, so validation reports it like a bad value in the file.
    Values cannot contain commas. Raises ValueError for bad syntax.
    """
    source, _, rest = spec.partition(":")
    table: dict[str, Any] = {"source": source}
    options_type = SOURCE_OPTIONS.get(source)
    camera_keys = schema(CameraConfig)
    option_keys = schema(options_type) if options_type else {}
    for item in rest.split(",") if rest else ():
        k, eq, text = item.partition("=")
        k = k.strip()
        if not eq or not k:
            raise ValueError(f"{json.dumps(item)} is not key=value")
        if k in ("source", "options"):
            raise ValueError(f"{k} cannot be a key: write SOURCE[:key=value,...]")
        target = table if k in camera_keys else table.setdefault("options", {})
        if k in target:
            raise ValueError(f"{k} is given twice")
        f = camera_keys.get(k) or option_keys.get(k)
        target[k] = f.metadata["type"].from_text(text) if f else text
    return table
