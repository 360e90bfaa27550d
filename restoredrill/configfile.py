"""Config files read as YAML with their line numbers, and the one error form for them all.

The site inventory, register maps and OPC UA node lists load through ``load``::

    doc = load("plc/line1.yaml", RegisterMapError, "the register map")
    doc.data                          # plain dict, list, str, int, float, bool, None
    doc.line(("tags", 3, "type"))     # the 1-based line of that key (or the nearest found)

libyaml (PyYAML's C parser; PyYAML's own Python parser where libyaml is missing) reads
the file event by event, and the values are built here as plain Python with a side table
of lines. Scalars resolve by YAML 1.2's core schema, as ruamel.yaml read them before:
``on`` and ``yes`` stay text, ``0644`` is 644, ``0o644`` is 420 (an :class:`OctalInt`),
dates stay text. A hostile file cannot exhaust the machine: its size, the values its
aliases expand to, its nesting and the length of its numbers are bounded, and every
refusal is an error like any other: ``file:line: field: what is expected``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)

PARSER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser when PyYAML was built with it (``yaml.__with_libyaml__``)."""
MAX_BYTES = 16 * 1024 * 1024
"""The largest config file read (a 10,000-tag register map is about 1.3 MB)."""
MAX_NODES = 1_000_000
"""The most values a file may hold once its aliases are expanded (a "billion laughs")."""
MAX_DEPTH = 100
"""The deepest nesting of mappings and lists."""
MAX_NUMBER = 100
"""The most characters of a number."""

__all__ = [
    "ConfigFileError",
    "Document",
    "OctalInt",
    "load",
    "parse",
    "problem",
    "read_text",
    "shown",
]


# --------------------------------------------------------------------------- errors


def problem(path: str | Path, line: int, field: str, message: str) -> str:
    """The one form of a config problem: ``path:line: field: message``.

    Line 0 means the whole file (it could not be read); an empty field means no field.
    """
    where = f"{path}:{line}" if line else str(path)
    return f"{where}: {field}: {message}" if field else f"{where}: {message}"


class ConfigFileError(ValueError):
    """A problem in a config file: ``path:line: field: message`` (``problems`` holds all)."""

    def __init__(
        self,
        path: str | Path,
        line: int,
        field: str,
        message: str,
        problems: Sequence[ConfigFileError] = (),
    ) -> None:
        self.path, self.line, self.field, self.message = str(path), line, field, message
        self.problems: list[ConfigFileError] = list(problems) or [self]
        super().__init__("\n".join(p.one_line() for p in self.problems))

    def one_line(self) -> str:
        return problem(self.path, self.line, self.field, self.message)


def shown(value: Any, limit: int = 40) -> str:
    """A value as an error message quotes it: text in double quotes, cut short if long."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        # repr of a huge int is slow, or refused past sys.get_int_max_str_digits()
        text = f"a number of about {int(abs(value).bit_length() * 0.30103) + 1:,} digits"
    else:
        text = repr(value)
    if len(text) > limit:
        text = f"{text[: limit - 10]}… ({len(text):,} characters)"
    return f'"{text}"' if isinstance(value, str) else text


def field_path(loc: Sequence[Any]) -> str:
    """``('tags', 3, 'type')`` -> ``tags[3].type``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# --------------------------------------------------------------------------- reading


def read_text(
    path: str | Path, error: type[ConfigFileError] = ConfigFileError, what: str = "the file"
) -> str:
    """A config file's text: at most ``MAX_BYTES``, UTF-8 (a byte order mark is dropped)."""
    path = Path(path)
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_BYTES + 1)
    except OSError as exc:
        raise error(path, 0, "", f"cannot read {what}: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise error(
            path, 0, "", f"{what} is larger than {MAX_BYTES >> 20} MiB, the limit for a config file"
        )
    return decode(raw, path, error)


def decode(raw: bytes, path: str | Path, error: type[ConfigFileError] = ConfigFileError) -> str:
    """UTF-8 text, or an error naming the line and column of the first byte that is not."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise error(path, 1, "", "not UTF-8 text: it is UTF-16 (save it as UTF-8)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        line = raw.count(b"\n", 0, exc.start) + 1
        column = len(raw[line_start : exc.start].decode("utf-8")) + 1
        raise error(
            path, line, "", f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {column})"
        ) from None
    return text.removeprefix("\ufeff")


class OctalInt(int):
    """An int written in octal (``0o644``), so a file mode reads back as it was written."""


class Document:
    """A parsed config file: plain ``data`` and the line of every key and list item."""

    def __init__(self, path: str | Path, data: Any, lines: Any) -> None:
        self.path, self.data, self._lines = str(path), data, lines

    def line(self, loc: Sequence[Any]) -> int:
        """The 1-based line of the deepest part of ``loc`` found in the file.

        A part that is not a key of the mapping reached (a pydantic union tag, a missing
        key) is passed over; anything below a scalar stops the search.
        """
        node, lines, line = self.data, self._lines, 1
        for part in loc:
            if isinstance(node, dict):
                if part in node:
                    line, lines = lines[part]
                    node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                line, lines = lines[part]
                node = node[part]
            else:
                break
        return line


def load(
    path: str | Path, error: type[ConfigFileError] = ConfigFileError, what: str = "the file"
) -> Document:
    """Read and parse a YAML config file (see ``read_text`` and ``parse``)."""
    return parse(read_text(path, error, what), path, error)


def parse(
    text: str, path: str | Path = "<text>", error: type[ConfigFileError] = ConfigFileError
) -> Document:
    """Parse one YAML document into a :class:`Document`; malformed or hostile text raises
    ``error(path, line, field, message)``."""
    parser = None
    try:
        parser = PARSER(text)
        data, lines = _Builder(path, error).build(parser.get_event)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise error(path, line, "", f"malformed YAML: {exc.problem or exc.context}") from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        prefix = text[: exc.position]
        if PARSER is not yaml.SafeLoader:  # libyaml counts bytes of UTF-8
            prefix = text.encode("utf-8")[: exc.position].decode("utf-8", "ignore")
        line = prefix.count("\n") + 1
        column = len(prefix) - (prefix.rfind("\n") + 1) + 1
        raise error(
            path,
            line,
            "",
            f"malformed YAML: {exc.reason} ({exc.character:#04x} at column {column})",
        ) from None
    finally:
        if parser is not None and hasattr(parser, "dispose"):
            parser.dispose()
    return Document(path, data, lines)


# --------------------------------------------------------------------------- building values

_STR, _INT, _FLOAT, _BOOL, _NULL, _MAP, _SEQ = (
    f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq")
)
_CONSTANTS: dict[str, Any] = {
    "": None,
    "~": None,
    **dict.fromkeys(("null", "Null", "NULL"), None),
    **dict.fromkeys(("true", "True", "TRUE"), True),
    **dict.fromkeys(("false", "False", "FALSE"), False),
    **{f"{s}.{w}": float(f"{s}inf") for s in ("", "+", "-") for w in ("inf", "Inf", "INF")},
    **dict.fromkeys((".nan", ".NaN", ".NAN"), float("nan")),
}
_NUMBER_START = frozenset("0123456789+-.")
_INT_RE = re.compile(r"[-+]?(?:0o[0-7_]+|0x[0-9a-fA-F_]+|0b[01_]+|[0-9][0-9_]*)")
_FLOAT_RE = re.compile(
    r"[-+]?(?:(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?"
    r"|[0-9][0-9_]*[eE][-+]?[0-9]+)"
)
_BASES = {"0o": 8, "0x": 16, "0b": 2}
_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {
    _INT: (int, "an integer"),
    _FLOAT: (float, "a number"),
    _BOOL: (bool, "true or false"),
    _NULL: (type(None), "null"),
}
_NO_KEY = object()
_MERGE = object()


class _Refused(Exception):
    """A value the loader refuses; the builder adds where it is."""


def _plain(text: str) -> Any:
    """A plain (unquoted, untagged) scalar by YAML 1.2's core schema."""
    constant = _CONSTANTS.get(text, _NO_KEY)
    if constant is not _NO_KEY:
        return constant
    if text[0] not in _NUMBER_START:
        return text
    is_int = _INT_RE.fullmatch(text)
    if not is_int and not _FLOAT_RE.fullmatch(text):
        return text
    if len(text) > MAX_NUMBER:
        raise _Refused(
            f"a number of {len(text):,} characters (at most {MAX_NUMBER}): {shown(text)}"
        )
    if not is_int:
        return float(text.replace("_", ""))
    body = text.lstrip("+-").replace("_", "")
    base = _BASES.get(body[:2], 10)
    try:
        number = int(body[2:] if base != 10 else body, base)
    except ValueError:  # a prefix and only underscores: "0x_"
        return text
    number = -number if text[0] == "-" else number
    return OctalInt(number) if base == 8 else number


def _tagged(tag: str, text: str) -> Any:
    """A scalar with an explicit tag: only YAML's own scalar types are accepted."""
    if tag in (_STR, "!"):
        return text
    if tag not in _TYPES:
        raise _Refused(
            f"unknown tag {_tag_name(tag)} (known: !!str, !!int, !!float, !!bool, !!null)"
        )
    kind, expected = _TYPES[tag]
    value = _plain(text) if text else None
    if tag == _FLOAT and type(value) is int:
        value = float(value)
    if not isinstance(value, kind) or (tag == _INT and isinstance(value, bool)):
        raise _Refused(f"{shown(text)} is not {expected} (tagged {_tag_name(tag)})")
    return value


def _tag_name(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org,") else tag


class _Frame:
    """A mapping or list being built: its value, its lines and where it started."""

    __slots__ = ("value", "lines", "is_map", "key", "key_line", "merges", "anchor", "start", "line")

    def __init__(self, is_map: bool, anchor: str | None, start: int, line: int) -> None:
        self.is_map, self.line = is_map, line
        self.value: Any = {} if is_map else []
        self.lines: Any = {} if is_map else []
        self.key: Any = _NO_KEY
        self.key_line = 0
        self.merges: list[tuple[Any, Any, int]] = []
        self.anchor = anchor
        self.start = start


class _Builder:
    """Plain values and their lines from parser events, within the bounds above."""

    def __init__(self, path: str | Path, error: type[ConfigFileError]) -> None:
        self.path, self.error = path, error
        self.stack: list[_Frame] = []
        self.anchors: dict[str, tuple[Any, Any, int]] = {}
        self.open: set[str] = set()
        self.count = 0

    def fail(self, line: int, message: str, key: Any = _NO_KEY) -> ConfigFileError:
        loc: list[Any] = []
        for frame in self.stack:
            if not frame.is_map:
                loc.append(len(frame.value))
            elif frame.key not in (_NO_KEY, _MERGE):
                loc.append(frame.key)
        if key is not _NO_KEY:
            loc.append(key)
        return self.error(self.path, line, field_path(loc), message)

    def build(self, next_event: Any) -> tuple[Any, Any]:
        """Consume the events of one document; return (data, lines)."""
        root: tuple[Any, Any] = (None, None)
        stack, anchors, plain = self.stack, self.anchors, _plain
        documents = 0
        while True:
            event = next_event()
            kind = type(event)
            if kind is ScalarEvent:  # the hot path: most events are scalars
                line = event.start_mark.line + 1
                self.count += 1
                if self.count > MAX_NODES:
                    self._grow(0, line)
                top = stack[-1] if stack else None
                if top is not None and top.is_map and top.key is _NO_KEY:
                    key = event.value
                    if key in top.lines or key == "<<" or event.anchor:
                        self._key(top, event, line)
                    else:
                        top.key, top.key_line = key, line
                    continue
                try:
                    if event.tag is None:
                        value = plain(event.value) if event.implicit[0] else event.value
                    else:
                        value = _tagged(event.tag, event.value)
                except _Refused as exc:
                    raise self.fail(line, str(exc)) from None
                if event.anchor:
                    anchors[event.anchor] = (value, None, 1)
                if top is None:
                    root = (value, None)
                elif top.is_map:
                    if top.key is _MERGE:
                        top.merges.append((value, None, line))
                    else:
                        top.value[top.key] = value
                        top.lines[top.key] = (top.key_line, None)
                    top.key = _NO_KEY
                else:
                    top.value.append(value)
                    top.lines.append((line, None))
                continue
            if kind is MappingStartEvent or kind is SequenceStartEvent:
                self._open(event, kind is MappingStartEvent)
                continue
            if kind is MappingEndEvent or kind is SequenceEndEvent:
                frame = stack[-1]
                if frame.merges:
                    self._merge(frame)
                stack.pop()
                if frame.anchor:
                    self.open.discard(frame.anchor)
                    anchors[frame.anchor] = (frame.value, frame.lines, self.count - frame.start)
                value, sub, line = frame.value, frame.lines, frame.line
            elif kind is AliasEvent:
                line = event.start_mark.line + 1
                value, sub = self._alias(event.anchor, line)
            elif kind is DocumentStartEvent:
                documents += 1
                if documents > 1:
                    line = event.start_mark.line + 1
                    raise self.error(
                        self.path, line, "", "a second YAML document (a config file holds one)"
                    )
                continue
            elif kind is StreamEndEvent:
                return root
            else:  # stream start, document end
                continue
            if not stack:
                root = (value, sub)
                continue
            top = stack[-1]
            if not top.is_map:
                top.value.append(value)
                top.lines.append((line, sub))
            elif top.key is _NO_KEY:
                raise self.fail(line, "a mapping key must be a plain value, not an alias")
            else:
                if top.key is _MERGE:
                    top.merges.append((value, sub, line))
                else:
                    top.value[top.key] = value
                    top.lines[top.key] = (top.key_line, sub)
                top.key = _NO_KEY

    def _key(self, top: _Frame, event: ScalarEvent, line: int) -> None:
        key = event.value
        if key == "<<" and event.implicit[0] and event.tag is None:
            top.key, top.key_line = _MERGE, line
            return
        if key in top.lines:
            first = top.lines[key][0]
            raise self.fail(line, f"duplicate key (first given on line {first})", key)
        if event.anchor:
            self.anchors[event.anchor] = (key, None, 1)
        top.key, top.key_line = key, line

    def _open(self, event: Any, is_map: bool) -> None:
        line = event.start_mark.line + 1
        top = self.stack[-1] if self.stack else None
        if top is not None and top.is_map and top.key is _NO_KEY:
            raise self.fail(line, "a mapping key must be a plain value, not a mapping or list")
        if event.tag not in (None, "!", _MAP if is_map else _SEQ):
            raise self.fail(line, f"unknown tag {_tag_name(event.tag)}")
        if len(self.stack) >= MAX_DEPTH:
            raise self.error(self.path, line, "", f"nested deeper than {MAX_DEPTH} levels")
        self._grow(1, line)
        frame = _Frame(is_map, event.anchor, self.count - 1, line)
        if event.anchor:
            self.open.add(event.anchor)
        self.stack.append(frame)

    def _alias(self, name: str, line: int) -> tuple[Any, Any]:
        if name in self.open:
            raise self.fail(line, f"alias *{name} refers to a mapping or list that holds it")
        if name not in self.anchors:
            raise self.fail(line, f"alias *{name} has no anchor &{name} before it")
        value, sub, size = self.anchors[name]
        self._grow(size, line)
        return value, sub

    def _grow(self, size: int, line: int) -> None:
        self.count += size
        if self.count > MAX_NODES:
            raise self.fail(
                line, f"too many nodes: aliases expand the file past {MAX_NODES:,} values"
            )

    def _merge(self, frame: _Frame) -> None:
        """``<<: *defaults``: keys of the merged mappings that the mapping does not set."""
        for value, sub, line in frame.merges:
            sources = [(value, sub)] if isinstance(value, dict) else []
            if isinstance(value, list):
                sources = [(v, s) for v, (_, s) in zip(value, sub, strict=True)]
            if not sources or not all(isinstance(v, dict) for v, _ in sources):
                raise self.fail(line, "<< takes a mapping or a list of mappings (<<: *defaults)")
            for source, lines in sources:
                for key, item in source.items():
                    if key not in frame.value:
                        frame.value[key] = item
                        frame.lines[key] = lines[key]
