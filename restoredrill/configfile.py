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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)

from .errors import InputError

PARSER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser when PyYAML was built with it (``yaml.__with_libyaml__``)."""
MAX_BYTES = 16 * 1024 * 1024
"""The largest config file read (a 10,000-tag register map is 1-2 MB)."""
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
    "decode",
    "field_path",
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


class ConfigFileError(InputError):
    """A problem in a config file: ``path:line: field: message`` (``problems`` holds all)."""

    headline = ""  # its lines name file, line and field

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
                if part not in node:
                    continue
            elif not (isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)):
                break
            entry, node = lines[part], node[part]
            line, lines = entry if type(entry) is tuple else (entry, None)
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
    return _number(text) if text[0] in _NUMBER_START else text


def _number(text: str) -> Any:
    """An int or float if ``text`` is written as one (a plain scalar), else the text."""
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


class _Open:
    """A mapping or list being built (or the document that holds the root value): its
    values and lines, the key being read, and what its end needs (anchor, start, merges)."""

    __slots__ = (
        "container",
        "lines",
        "is_map",
        "key",
        "key_line",
        "anchor",
        "start",
        "line",
        "merges",
    )

    def __init__(self, kind: type | None, anchor: str | None = None, start: int = 0, line: int = 0):
        self.is_map = kind is dict
        self.container: Any = kind() if kind is not None else None
        self.lines: Any = kind() if kind is not None else None
        self.key: Any = _NO_KEY
        self.key_line = 0
        self.anchor, self.start, self.line = anchor, start, line
        self.merges: list[tuple[Any, Any, int]] = []


class _Builder:
    """Plain values and their lines from parser events, within the bounds above.

    The line table mirrors the data: a mapping's lines are ``{key: entry}``, a list's
    ``[entry]``, where an entry is the line of a scalar, or ``(line, lines)`` for a mapping,
    a list or an alias. Each event goes to its handler with the innermost mapping or list
    being built (``top``); the handler returns the one after it. Those around it wait on
    ``stack``.
    """

    def __init__(self, path: str | Path, error: type[ConfigFileError]) -> None:
        self.path, self.error = path, error
        self.anchors: dict[str, tuple[Any, Any, int]] = {}
        self.open: set[str] = set()
        self.stack: list[_Open] = []
        self.count = self.documents = 0
        self.root: tuple[Any, Any] = (None, None)

    def build(self, next_event: Callable[[], Any]) -> tuple[Any, Any]:
        """Consume the events of one document; return (data, lines)."""
        handlers: dict[type, Callable[[Any, _Open], _Open]] = {
            ScalarEvent: self._scalar,
            MappingStartEvent: self._start,
            SequenceStartEvent: self._start,
            MappingEndEvent: self._end,
            SequenceEndEvent: self._end,
            AliasEvent: self._alias,
            DocumentStartEvent: self._document,
        }
        top = _Open(None)
        while True:
            event = next_event()
            kind = type(event)
            if kind is StreamEndEvent:
                return self.root
            handler = handlers.get(kind)  # none for stream start and document end
            if handler is not None:
                top = handler(event, top)

    def _scalar(self, event: ScalarEvent, top: _Open) -> _Open:
        """A key, or a value (plain, quoted or tagged): the hot path."""
        self.count += 1
        line = _line(event)
        if self.count > MAX_NODES:
            raise self.too_many(line, top)
        if top.is_map and top.key is _NO_KEY:
            key = event.value
            if key in top.lines or key == "<<" or event.anchor:
                key = self._key(event, line, top)
            top.key, top.key_line = key, line
            return top
        try:
            if event.tag is not None:
                value = _tagged(event.tag, event.value)
            else:
                value = _plain(event.value) if event.implicit[0] else event.value
        except _Refused as exc:
            raise self.fail(line, str(exc), top) from None
        if event.anchor:
            self.anchors[event.anchor] = (value, None, 1)
        self._add(top, value, None, line)
        return top

    def _start(self, event: MappingStartEvent | SequenceStartEvent, top: _Open) -> _Open:
        """A mapping or list begins inside ``top``: it is the new top."""
        self.count += 1
        line = _line(event)
        if self.count > MAX_NODES:
            raise self.too_many(line, top)
        if top.is_map and top.key is _NO_KEY:
            message = "a mapping key must be a plain value, not a mapping or list"
            raise self.fail(line, message, top)
        opens_map = type(event) is MappingStartEvent
        if event.tag not in (None, "!", _MAP if opens_map else _SEQ):
            raise self.fail(line, f"unknown tag {_tag_name(event.tag)}", top)
        if len(self.stack) >= MAX_DEPTH:
            raise self.error(self.path, line, "", f"nested deeper than {MAX_DEPTH} levels")
        self.stack.append(top)
        if event.anchor:
            self.open.add(event.anchor)
        return _Open(dict if opens_map else list, event.anchor, self.count - 1, line)

    def _end(self, event: MappingEndEvent | SequenceEndEvent, top: _Open) -> _Open:
        """``top`` is complete: merged, remembered under its anchor, added to its parent."""
        if top.merges:
            self._merge(top)
        if top.anchor:
            self.open.discard(top.anchor)
            self.anchors[top.anchor] = (top.container, top.lines, self.count - top.start)
        parent = self.stack.pop()
        self._add(parent, top.container, top.lines, top.line)
        return parent

    def _alias(self, event: AliasEvent, top: _Open) -> _Open:
        """``*name``: the anchored value again (counted as many times as it is used)."""
        line = _line(event)
        name = event.anchor
        if name in self.open or name not in self.anchors:
            message = (
                f"alias *{name} refers to a mapping or list that holds it"
                if name in self.open
                else f"alias *{name} has no anchor &{name} before it"
            )
            raise self.fail(line, message, top)
        value, sub, size = self.anchors[name]
        self.count += size
        if self.count > MAX_NODES:
            raise self.too_many(line, top)
        if top.is_map and top.key is _NO_KEY:
            raise self.fail(line, "a mapping key must be a plain value, not an alias", top)
        self._add(top, value, sub, line)
        return top

    def _document(self, event: DocumentStartEvent, top: _Open) -> _Open:
        self.documents += 1
        if self.documents > 1:
            message = "a second YAML document (a config file holds one)"
            raise self.error(self.path, _line(event), "", message)
        return top

    def _add(self, top: _Open, value: Any, sub: Any, line: int) -> None:
        """Put a finished value (``sub``: its lines, None for a scalar) where it belongs."""
        if top.is_map:
            if top.key is _MERGE:
                top.merges.append((value, sub, line))
            else:
                top.container[top.key] = value
                top.lines[top.key] = top.key_line if sub is None else (top.key_line, sub)
            top.key = _NO_KEY
        elif top.container is not None:
            top.container.append(value)
            top.lines.append(line if sub is None else (line, sub))
        else:
            self.root = (value, sub)

    def _key(self, event: ScalarEvent, line: int, top: _Open) -> Any:
        """A key that is a duplicate, a merge (``<<``) or anchored: the slow path."""
        key = event.value
        if key == "<<" and event.implicit[0] and event.tag is None:
            return _MERGE
        if key in top.lines:
            first = _line_of(top.lines[key])
            raise self.fail(line, f"duplicate key (first given on line {first})", top, key)
        if event.anchor:
            self.anchors[event.anchor] = (key, None, 1)
        return key

    def _merge(self, top: _Open) -> None:
        """``<<: *defaults``: keys of the merged mappings that the mapping does not set."""
        container, lines = top.container, top.lines
        for value, sub, line in top.merges:
            sources = [(value, sub)] if isinstance(value, dict) else []
            if isinstance(value, list):
                sources = [(v, _sub_of(s)) for v, s in zip(value, sub, strict=True)]
            if not sources or not all(isinstance(v, dict) for v, _ in sources):
                message = "<< takes a mapping or a list of mappings (<<: *defaults)"
                raise self.fail(line, message, top)
            for source, source_lines in sources:
                for key, item in source.items():
                    if key not in container:
                        container[key] = item
                        lines[key] = source_lines[key]

    def too_many(self, line: int, top: _Open) -> ConfigFileError:
        message = f"too many nodes: aliases expand the file past {MAX_NODES:,} values"
        return self.fail(line, message, top)

    def fail(self, line: int, message: str, top: _Open, extra: Any = _NO_KEY) -> ConfigFileError:
        """An error at ``line`` naming the field being read (``extra``: a key below it)."""
        loc: list[Any] = []
        for level in [*self.stack, top]:
            if level.container is None:
                continue
            if not level.is_map:
                loc.append(len(level.container))
            elif level.key is not _NO_KEY and level.key is not _MERGE:
                loc.append(level.key)
        if extra is not _NO_KEY:
            loc.append(extra)
        return self.error(self.path, line, field_path(loc), message)


def _line(event: Event) -> int:
    """The 1-based line where ``event`` starts (the parser marks every event it makes)."""
    mark = event.start_mark
    return mark.line + 1 if mark is not None else 0


def _line_of(entry: Any) -> int:
    return entry[0] if type(entry) is tuple else entry


def _sub_of(entry: Any) -> Any:
    return entry[1] if type(entry) is tuple else None
