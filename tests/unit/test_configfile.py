"""The one config-file loader: plain values, exact lines, and hostile files refused clearly."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from restoredrill import configfile
from restoredrill.configfile import (
    MAX_BYTES,
    ConfigFileError,
    OctalInt,
    load,
    parse,
    read_text,
)

SAMPLE = """\
# a comment
site: plant
defaults: &defaults
  rto: 15m
  labels: {zone: ot}
systems:
  - name: historian
    <<: *defaults
    rto: 5m
    checks:
      - {kind: tcp, port: 8080}
      - kind: http
        port: 80
  - name: mes
    <<: *defaults
flags: [on, yes, true, 'true', ~, 0644, 0o644, 0x1F, 1_000, 2024-01-01, .inf, 1e3]
"""


def error_of(text: str, path: str = "f.yaml") -> str:
    with pytest.raises(ConfigFileError) as info:
        parse(text, path)
    return info.value.one_line()


def test_libyaml_parses_here() -> None:
    assert yaml.__with_libyaml__ and configfile.PARSER is yaml.CSafeLoader


def test_values_are_plain_python() -> None:
    data = parse(SAMPLE).data
    assert type(data) is dict and type(data["systems"]) is list
    assert data["systems"][0] == {
        "name": "historian",
        "rto": "5m",  # set in the mapping: wins over the merged default
        "labels": {"zone": "ot"},
        "checks": [{"kind": "tcp", "port": 8080}, {"kind": "http", "port": 80}],
    }
    assert data["systems"][1] == {"name": "mes", "rto": "15m", "labels": {"zone": "ot"}}


def test_scalars_resolve_as_yaml_1_2_as_before() -> None:
    flags = parse(SAMPLE).data["flags"]
    assert flags[:5] == ["on", "yes", True, "true", None]
    assert flags[5:9] == [644, 420, 31, 1000]
    assert type(flags[6]) is OctalInt and type(flags[5]) is int
    assert flags[9] == "2024-01-01"  # dates stay text
    assert flags[10] == math.inf and flags[11] == 1000.0


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("!!str 5", "5"),
        ("!!int '7'", 7),
        ("!!float 3", 3.0),
        ("!!bool 'true'", True),
        ("!!null ''", None),
        ("! 5", "5"),
        ("-.5", -0.5),
        ("+12", 12),
        ("0b101", 5),
        (".NaN", "nan"),
        ("NaN", "NaN"),
        ("1:30", "1:30"),
        ("0x", "0x"),
        ("10.77.0.0/24", "10.77.0.0/24"),
    ],
)
def test_scalar_forms(text: str, value: object) -> None:
    got = parse(f"k: {text}\n").data["k"]
    if value == "nan":
        assert math.isnan(got)
    else:
        assert got == value and type(got) is type(value)


def test_lines_of_keys_items_and_merged_keys() -> None:
    doc = parse(SAMPLE)
    assert doc.line(("site",)) == 2
    assert doc.line(("systems", 0)) == 7
    assert doc.line(("systems", 0, "rto")) == 9
    assert doc.line(("systems", 0, "checks", 1, "port")) == 13
    assert doc.line(("systems", 0, "checks", 0, "port")) == 11  # flow style: the item's line
    assert doc.line(("systems", 1, "rto")) == 4  # merged: where the value is written
    assert doc.line(("flags", 7)) == 16


def test_line_passes_over_union_tags_and_stops_at_what_is_missing() -> None:
    doc = parse(SAMPLE)
    assert doc.line(("systems", 0, "checks", 1, "http", "port")) == 13
    assert doc.line(("systems", 0, "nope")) == 7
    assert doc.line(("systems", 9, "name")) == 6
    assert doc.line(("site", "deeper")) == 2
    assert doc.line(()) == 1


def test_duplicate_keys_name_both_lines_and_the_field() -> None:
    text = "systems:\n  - name: a\n    rto: 1m\n    labels: {}\n    rto: 2m\n"
    assert error_of(text) == "f.yaml:5: systems[0].rto: duplicate key (first given on line 3)"
    assert error_of("a: 1\nb: 2\na: 3\n") == "f.yaml:3: a: duplicate key (first given on line 1)"


def billion_laughs(levels: int = 9) -> str:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    names = "abcdefghijklmnopqrstuvwxyz"
    for i in range(1, levels):
        text += f"{names[i]}: &{names[i]} [{', '.join([f'*{names[i - 1]}'] * 9)}]\n"
    return text


def test_alias_bomb_is_refused_where_it_crosses_the_bound() -> None:
    assert error_of(billion_laughs()) == (
        "f.yaml:7: g[0]: too many nodes: aliases expand the file past 1,000,000 values"
    )


def test_aliases_within_the_bound_expand() -> None:
    data = parse(billion_laughs(5)).data  # 9**5 = 59,049 strings
    assert len(data["e"]) == 9 and data["e"][8][8][8][8][8] == "lol"


def test_recursive_and_undefined_aliases() -> None:
    assert error_of("a: [1, &r [*r]]\n") == (
        "f.yaml:1: a[1][0]: alias *r refers to a mapping or list that holds it"
    )
    assert error_of("a: 1\nb: *q\n") == "f.yaml:2: b: alias *q has no anchor &q before it"


def test_nesting_and_numbers_are_bounded() -> None:
    assert error_of("a: " + "[" * 150 + "]" * 150 + "\n") == (
        "f.yaml:1: nested deeper than 100 levels"
    )
    digits = "9" * 40_000  # past Python's int() limit of 4,300 digits
    message = error_of(f"a: 1\nrto: {digits}\n")
    assert message.startswith("f.yaml:2: rto: a number of 40,000 characters (at most 100): ")
    assert len(message) < 200


def test_tags_other_than_yaml_scalars_are_refused() -> None:
    assert error_of("a:\n  b: !!python/object/apply:os.system [ls]\n") == (
        "f.yaml:2: a.b: unknown tag !!python/object/apply:os.system"
    )
    assert error_of("x: !vault abc\n") == (
        "f.yaml:1: x: unknown tag !vault (known: !!str, !!int, !!float, !!bool, !!null)"
    )
    assert error_of("x: !!int abc\n") == 'f.yaml:1: x: "abc" is not an integer (tagged !!int)'


def test_malformed_yaml_keeps_its_form() -> None:
    assert error_of("a:\n\tb: 1\n") == (
        "f.yaml:2: malformed YAML: found character that cannot start any token"
    )
    assert error_of("a: [1\nb: 2\n").startswith("f.yaml:")
    assert "malformed YAML" in error_of("a: [1\nb: 2\n")
    assert error_of("a: b\nc: d\x01e\n") == (
        "f.yaml:2: malformed YAML: control characters are not allowed (0x01 at column 5)"
    )
    assert error_of("a: 1\n---\nb: 2\n") == (
        "f.yaml:2: a second YAML document (a config file holds one)"
    )
    assert error_of("? [a, b]\n: 1\n") == (
        "f.yaml:1: a mapping key must be a plain value, not a mapping or list"
    )
    assert error_of("a:\n  <<: 5\n") == (
        "f.yaml:2: a: << takes a mapping or a list of mappings (<<: *defaults)"
    )


def test_empty_file_is_none() -> None:
    assert parse("# nothing here\n").data is None


def test_non_utf8_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_bytes(b"site: plant\nsystems:\n  - name: P\xc3\xbcmpe\xff\n")
    with pytest.raises(ConfigFileError) as info:
        load(path)
    assert info.value.one_line() == f"{path}:3: not UTF-8 text (byte 0xff at column 16)"
    path.write_bytes("site: Pümpe\n".encode("latin-1"))  # a file saved as Latin-1
    with pytest.raises(ConfigFileError) as info:
        load(path)
    assert info.value.one_line() == f"{path}:1: not UTF-8 text (byte 0xfc at column 8)"
    path.write_bytes("a: 1\n".encode("utf-16"))
    with pytest.raises(ConfigFileError) as info:
        load(path)
    assert info.value.one_line() == f"{path}:1: not UTF-8 text: it is UTF-16 (save it as UTF-8)"


def test_byte_order_mark_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbfsite: plant\nrto: 5m\n")
    doc = load(path)
    assert doc.data == {"site": "plant", "rto": "5m"} and doc.line(("rto",)) == 2


def test_file_size_is_bounded(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(MAX_BYTES + 1)
    with pytest.raises(ConfigFileError) as info:
        read_text(big, what="the site file")
    assert info.value.one_line() == (
        f"{big}: the site file is larger than 16 MiB, the limit for a config file"
    )
    with pytest.raises(ConfigFileError, match="larger than 16 MiB"):
        read_text("/dev/zero")  # no size to stat: the read itself is bounded


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError) as info:
        read_text(tmp_path / "missing.yaml", what="the register map")
    assert info.value.one_line() == (
        f"{tmp_path / 'missing.yaml'}: cannot read the register map: No such file or directory"
    )


def test_pure_python_parser_gives_the_same_values_lines_and_errors(monkeypatch) -> None:
    fast = parse(SAMPLE)
    errors = ["a: é\nc: d\x01e\n", "a:\n\tb: 1\n", "a: 1\na: 2\n", billion_laughs()]
    fast_errors = [error_of(t) for t in errors]
    monkeypatch.setattr(configfile, "PARSER", yaml.SafeLoader)
    slow = parse(SAMPLE)
    assert slow.data == fast.data
    for loc in [("site",), ("systems", 0, "checks", 1, "port"), ("systems", 1, "rto")]:
        assert slow.line(loc) == fast.line(loc)
    slow_errors = [error_of(t) for t in errors]
    # the pure-Python reader words its errors a little differently; lines are the same
    assert slow_errors[0].startswith("f.yaml:2: malformed YAML: ")
    assert slow_errors[0].endswith("(0x01 at column 5)")
    assert slow_errors[1].startswith("f.yaml:2: malformed YAML: found character")
    assert slow_errors[2:] == fast_errors[2:]


def test_error_form_without_line_or_field() -> None:
    assert configfile.problem("a.yaml", 0, "", "cannot read") == "a.yaml: cannot read"
    assert configfile.problem("a.yaml", 3, "x[1]", "bad") == "a.yaml:3: x[1]: bad"
    err = ConfigFileError("a.yaml", 3, "x", "bad", [ConfigFileError("a.yaml", 4, "", "worse")])
    assert str(err) == "a.yaml:4: worse"
