"""The value-type framework: typed keys, their bounds, and the errors they report.

A schema is a set of frozen dataclasses whose fields are made with `key()`:
each field's metadata holds its type (which validates, converts and says in
words what is allowed), its help text and its default. Nothing here knows any
particular schema; rpistream/config/schema.py is the one that uses it.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any, Iterator, Mapping


class ConfigError(Exception):
    """The configuration is unusable; `errors` holds one line per problem."""

    def __init__(self, source: str, errors: list[str] | tuple[str, ...]):
        self.source = source
        self.errors = tuple(errors)
        super().__init__(f"error in {source}:\n" + "\n".join(f"  {e}" for e in self.errors))


INVALID = object()  # a value that already produced an error
REQUIRED = dataclasses.MISSING  # the default of a key that must be given


class Walk:
    """Error collector for one pass over a config; `labels` renames key paths
    given on the command line (e.g. "server.port" -> "--port")."""

    def __init__(self, labels: Mapping[str, str]):
        self.errors: list[str] = []
        self.labels = labels

    def join(self, path: str, key: Any) -> str:
        key = str(key)
        if not re.fullmatch(r"[A-Za-z0-9_-]+", key):  # TOML: such keys must be quoted
            key = json.dumps(key, ensure_ascii=False)
        joined = f"{path}.{key}" if path else key
        return self.labels.get(joined, joined)

    def error(self, message: str) -> None:
        self.errors.append(message)

    def unknown_key(self, path: str, key: str, allowed: Mapping[str, Any], doc: str) -> None:
        if not allowed:  # a table that takes no keys; its class doc says why
            self.error(f"{path}: unknown key; {doc.strip()}")
            return
        close = difflib.get_close_matches(key, list(allowed), n=1)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        self.error(f"{path}: unknown key{hint}; allowed keys: {', '.join(allowed)}")


# ── schema entries ───────────────────────────────────────────────────────────


def key(type_: ValueType, help: str, default: Any = REQUIRED, *, toml: str | None = None,
        example: Any = REQUIRED, default_text: str | None = None) -> Any:
    """A schema entry: a dataclass field whose metadata says how to read it.

    `toml` is the key's name in the file when it differs from the attribute;
    `example` is shown in config.example.toml when there is no default to
    show; `default_text` describes a default that is not a plain value.
    """
    meta = {"type": type_, "help": help, "toml": toml, "example": example,
            "default_text": default_text}
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable default")  # frozen config: use a tuple
    if default is REQUIRED:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


def default_of(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else REQUIRED


def schema(cls: type) -> dict[str, dataclasses.Field]:
    """TOML key -> dataclass field of `cls` (fields made without `key()` are
    not keys)."""
    return {f.metadata["toml"] or f.name: f for f in dataclasses.fields(cls) if f.metadata}


class Section:
    """Base of a schema's dataclasses: cross-key checks, run on the keys that
    passed their own checks, as (key, message) pairs."""

    @staticmethod
    def problems(values: dict) -> Iterator[tuple[str, str]]:
        return iter(())


# ── value types ──────────────────────────────────────────────────────────────
# Each type knows what it accepts (`allowed`, used in every message and in the
# example file), how to check and convert a parsed TOML value, and how to read
# the same value from command-line text.


class ValueType:
    allowed = "?"
    # What a key left out is read as when its default depends on other keys of
    # its table (a camera's options on its source); None: the field's default.
    missing_as: Any = None

    def convert(self, value: Any) -> Any:
        """The checked value; raise ValueError if it is not allowed."""
        raise NotImplementedError

    def parse(self, value: Any, path: str, walk: Walk, siblings: dict) -> Any:
        try:
            return self.convert(value)
        except ValueError:
            walk.error(f"{path} = {show(value)}: must be {self.allowed}")
            return INVALID

    def from_text(self, text: str) -> Any:
        return text

    def toml(self, value: Any) -> str:
        return toml_value(value)


@dataclass(frozen=True)
class Int(ValueType):
    lo: int
    hi: int
    even: bool = False

    @property
    def allowed(self) -> str:
        return f"{'an even' if self.even else 'an'} integer from {self.lo} to {self.hi}"

    def convert(self, value):
        # type() rather than isinstance(): bool is an int subclass, and
        # `fps = true` is a mistake, not 1.
        if type(value) is int and self.lo <= value <= self.hi and not (self.even and value % 2):
            return value
        raise ValueError

    def from_text(self, text):
        try:
            return int(text)
        except ValueError:  # not a number, or too many digits: validation says so
            return text


@dataclass(frozen=True)
class Seconds(ValueType):
    lo: float
    hi: float

    @property
    def allowed(self) -> str:
        return f"a number of seconds from {self.lo:g} to {self.hi:g}"

    def convert(self, value):
        # NaN fails the range test, so it needs no case of its own.
        if type(value) in (int, float) and self.lo <= value <= self.hi:
            return float(value)
        raise ValueError

    def from_text(self, text):
        try:
            return float(text)
        except ValueError:
            return text


@dataclass(frozen=True)
class Number(Seconds):
    """A number in another unit than seconds."""

    unit: str = ""

    @property
    def allowed(self) -> str:
        return f"a number of {self.unit} from {self.lo:g} to {self.hi:g}"


_SI = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}
# Sizes count in powers of 1024, as systemd's MemoryMax=512M and df -h do.
_BINARY = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def _scaled(value, factors: dict[str, int]):
    """An int, or a string of digits with one of `factors`' suffixes, as an
    int; ValueError for anything else."""
    if type(value) is str:
        suffixes = "".join(k + k.upper() for k in factors if k)
        m = re.fullmatch(rf"\s*(\d{{1,12}}(?:\.\d{{1,12}})?)\s*([{suffixes}]?)\s*", value)
        if not m:
            raise ValueError
        value = round(float(m[1]) * factors[m[2].lower()])  # finite: at most 12 digits
    return value


@dataclass(frozen=True)
class Bitrate(ValueType):
    lo: int
    hi: int

    @property
    def allowed(self) -> str:
        return (f"bits per second from {self.lo} to {self.hi}: an integer, "
                f'or a string like "800k" or "4M"')

    factors = _SI

    def convert(self, value):
        value = _scaled(value, self.factors)
        if type(value) is int and self.lo <= value <= self.hi:
            return value
        raise ValueError

    def from_text(self, text):
        return Int(self.lo, self.hi).from_text(text)

    def toml(self, value):
        return f"{value:_}"  # 4_000_000: a valid TOML integer that reads at a glance


@dataclass(frozen=True)
class ByteSize(Bitrate):
    factors = _BINARY

    @property
    def allowed(self) -> str:
        return (f"a size in bytes from {self.lo} to {self.hi}: an integer, or a string "
                f'like "500M" or "10G" (K, M, G, T: powers of 1024)')

    def toml(self, value):
        """The largest unit that divides it: "1G" reads better than 1_073_741_824."""
        if type(value) is int:
            unit = next(k for k, f in sorted(_BINARY.items(), key=lambda kf: -kf[1])
                        if value % f == 0)
            value = f"{value // _BINARY[unit]}{unit.upper()}"
        return f'"{value}"'


@dataclass(frozen=True)
class Bool(ValueType):
    allowed = "true or false"

    def convert(self, value):
        if type(value) is bool:
            return value
        raise ValueError

    def from_text(self, text):
        return {"true": True, "yes": True, "1": True,
                "false": False, "no": False, "0": False}.get(text.strip().lower(), text)


@dataclass(frozen=True)
class Choice(ValueType):
    values: tuple[str, ...]

    @property
    def allowed(self) -> str:
        return "one of " + ", ".join(json.dumps(v) for v in self.values)

    def convert(self, value):
        if type(value) is str and value in self.values:
            return value
        raise ValueError


@dataclass(frozen=True)
class ProtectionRate(ValueType):
    """FEC protection: "adaptive", or a fixed percentage of the media packets."""

    allowed = '"adaptive" or a percentage from 1 to 100'

    def convert(self, value):
        if value == "adaptive" or (type(value) in (int, float) and 1 <= value <= 100):
            return value if value == "adaptive" else float(value)
        raise ValueError

    def from_text(self, text):
        try:
            return float(text)
        except ValueError:
            return text


@dataclass(frozen=True)
class Str(ValueType):
    pattern: str | None = None
    min_len: int = 1
    described: str | None = None  # what `pattern` means, in words

    @property
    def allowed(self) -> str:
        if self.described:
            return self.described
        return "a non-empty string" if self.min_len == 1 else f"a string of at least {self.min_len} characters"

    def convert(self, value):
        if (type(value) is str and len(value) >= self.min_len
                and (self.pattern is None or re.fullmatch(self.pattern, value))):
            return value
        raise ValueError


@dataclass(frozen=True)
class IpAddress(ValueType):
    allowed = 'an IP address such as "192.168.1.20" or "fd00::20"'

    def convert(self, value):
        if type(value) is str:
            return str(ipaddress.ip_address(value))  # ValueError if not an address
        raise ValueError


@dataclass(frozen=True)
class IceUrls(ValueType):
    # RFC 7064 (stun:, stuns:) and RFC 7065 (turn:, turns:) URI schemes.
    allowed = ('a STUN or TURN URL starting with "stun:", "stuns:", "turn:" or '
               '"turns:", or a non-empty array of them')

    def convert(self, value):
        urls = [value] if type(value) is str else value
        if (type(urls) is list and urls
                and all(type(u) is str and re.match(r"(stuns?|turns?):.", u) for u in urls)):
            return tuple(urls)
        raise ValueError


@dataclass(frozen=True)
class ListOf(ValueType):
    item: ValueType

    @property
    def allowed(self) -> str:
        return f"an array, each item {self.item.allowed}"

    def parse(self, value, path, walk, siblings):
        if type(value) is not list:
            walk.error(f"{path} = {show(value)}: must be {self.allowed}")
            return INVALID
        items = [self.item.parse(v, f"{path}[{i}]", walk, {}) for i, v in enumerate(value)]
        return INVALID if INVALID in items else tuple(items)

    def toml(self, value):
        items = [self.item.toml(v) for v in value]
        if sum(map(len, items)) < 50:
            return "[" + ", ".join(items) + "]"
        return "[\n" + "".join(f"#    {v},\n" for v in items) + "#]"  # TOML arrays may span lines


@dataclass(frozen=True)
class Table(ValueType):
    """A TOML table read into the dataclass `cls`, whose fields are the schema."""

    cls: type

    @property
    def allowed(self) -> str:
        return "a table with keys " + ", ".join(schema(self.cls))

    def parse(self, value, path, walk, siblings):
        if type(value) is not dict:
            walk.error(f"{path} = {show(value)}: must be a table")
            return INVALID
        keys = schema(self.cls)
        for k in value:
            if k not in keys:
                walk.unknown_key(walk.join(path, k), str(k), keys, self.cls.__doc__)
        values = {}
        for name, f in keys.items():
            key_path = walk.join(path, name)
            type_ = f.metadata["type"]
            if name in value:
                values[f.name] = type_.parse(value[name], key_path, walk, values)
            elif default_of(f) is REQUIRED:
                walk.error(f"{key_path}: missing; must be {type_.allowed}")
                values[f.name] = INVALID
            elif type_.missing_as is not None:
                values[f.name] = type_.parse(type_.missing_as, key_path, walk, values)
        valid = {k: v for k, v in values.items() if v is not INVALID}
        for key_, message in self.cls.problems(valid):
            if values.get(key_) is INVALID:
                continue  # its own error is said; to the check it looked left out
            shown = f" = {show(valid[key_])}" if key_ in valid else ""  # or missing
            walk.error(f"{walk.join(path, key_)}{shown}: {message}")
        if len(valid) < len(values):
            return INVALID
        return self.cls(**valid)


# ── values written as TOML (messages and the example file) ───────────────────


def _items(value: Any) -> Iterator[tuple[str, Any]]:
    if dataclasses.is_dataclass(value):
        for k, f in schema(type(value)).items():
            v = getattr(value, f.name)
            if v is not None and v != default_of(f):
                yield k, v
    else:
        yield from value.items()


def toml_value(value: Any) -> str:
    """`value` written as TOML (inline tables for tables)."""
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is int:
        return str(value)
    if type(value) is float:
        return repr(value) if math.isfinite(value) else ("nan" if value != value else
                                                         ("inf" if value > 0 else "-inf"))
    if type(value) is str:
        return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict) or dataclasses.is_dataclass(value):
        items = ", ".join(f"{k} = {toml_value(v)}" for k, v in _items(value))
        return "{ " + items + " }" if items else "{}"
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    return repr(value)


def show(value: Any, limit: int = 60) -> str:
    """A bad value as the user wrote it (TOML), shortened for a message."""
    try:
        text = toml_value(value)
    except Exception:  # e.g. an int too long for str(); a message must not fail
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."
