"""The config: TOML file + command-line overrides -> frozen, validated `Config`.

Each key is described in exactly one place, the schema, and everything else
is derived from it: validation and its messages, `--camera` parsing, and
config.example.toml. The modules depend one way, and on nothing else in
rpistream:

    values   the value-type framework: typed keys, bounds, ConfigError
    schema   the sections and their keys, with help and the reasons for bounds
    loader   TOML reading, file and secret-file errors, `--camera` specs
    example  config.example.toml (`python -m rpistream.config`)

Here are the names the rest of rpistream uses.
"""

from rpistream.config.loader import (DEFAULT_CONFIG_PATH, load_config, parse_camera_spec,
                                     parse_config, read_secrets, resolve_config_path)
from rpistream.config.schema import (CameraConfig, Config, FileOptions, LimitsConfig,
                                     MonitorConfig, Picamera2Options)
from rpistream.config.values import ConfigError

__all__ = ["DEFAULT_CONFIG_PATH", "CameraConfig", "Config", "ConfigError", "FileOptions",
           "LimitsConfig", "MonitorConfig", "Picamera2Options", "load_config",
           "parse_camera_spec", "parse_config", "read_secrets", "resolve_config_path"]
