"""Register maps and OPC UA node lists load through the one config-file loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from restoredrill.twins.registers import RegisterMapError, load_register_map
from restoredrill.twins.scada import ScadaConfigError, load_node_list

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo" / "plc"
HEAD = "name: p\ntags:\n"


def map_error(path: Path) -> RegisterMapError:
    with pytest.raises(RegisterMapError) as info:
        load_register_map(path)
    return info.value


def test_demo_map_and_node_list_load() -> None:
    yaml_map, csv_map = (
        load_register_map(DEMO / "line1.yaml"),
        load_register_map(DEMO / "line1.csv"),
    )
    assert yaml_map.names() == csv_map.names() and "tank_level" in yaml_map.names()
    assert load_node_list(DEMO / "line1-opcua.yaml").nodes[0].folder == "Line1"


def test_register_map_errors_keep_their_form(tmp_path: Path) -> None:
    path = tmp_path / "plc.yaml"
    path.write_text(
        HEAD + "  - {name: a, table: holding, address: 0}\n  - {name: b, table: hold}\n"
    )
    err = map_error(path)
    assert (err.line, err.field) == (4, "tags[1].table")
    assert str(err).startswith(f"{path}:4: tags[1].table: ")
    path.write_text("")
    assert str(map_error(path)) == f"{path}:1: the file is empty"
    path.write_text("tags:\n  - name: a\n    table: [holding\n")
    assert str(map_error(path)).startswith(f"{path}:4: malformed YAML: ")


def test_register_map_duplicate_key(tmp_path: Path) -> None:
    path = tmp_path / "plc.yaml"
    path.write_text(HEAD + "  - name: a\n    table: holding\n    address: 0\n    address: 1\n")
    err = map_error(path)
    assert str(err) == f"{path}:6: tags[0].address: duplicate key (first given on line 5)"


def test_register_map_hostile_files(tmp_path: Path) -> None:
    path = tmp_path / "plc.yaml"
    path.write_bytes(HEAD.encode() + b"  - {name: caf\xe9, table: coil, address: 0}\n")
    assert str(map_error(path)) == f"{path}:3: not UTF-8 text (byte 0xe9 at column 15)"
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n"
        for p, c in zip("abcdef", "bcdefg", strict=True)
    )
    path.write_text(bomb + HEAD + "  - {name: a, table: coil, address: 0}\n")
    assert str(map_error(path)) == (
        f"{path}:6: f[7]: too many nodes: aliases expand the file past 1,000,000 values"
    )
    missing = tmp_path / "nope.yaml"
    assert str(map_error(missing)) == (
        f"{missing}: cannot read the register map: No such file or directory"
    )


def test_csv_map_from_excel_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "plc.csv"
    path.write_bytes(b"\xef\xbb\xbfname,table,address\r\na,holding,0\r\n")
    assert load_register_map(path).names() == ["a"]
    path.write_bytes(b"name,table,address\na,holding,0\nb\xff,holding,1\n")
    assert str(map_error(path)) == f"{path}:3: not UTF-8 text (byte 0xff at column 2)"


def test_node_list_errors_keep_their_form(tmp_path: Path) -> None:
    path = tmp_path / "nodes.yaml"
    path.write_text("nodes:\n  - folder: A\n    nodes:\n      - {variable: X, type: Complex}\n")
    with pytest.raises(ScadaConfigError, match=rf"^{path}:4: nodes\[0\]\.nodes\[0\]: .*Complex"):
        load_node_list(path)
    path.write_text("nodes:\n  - variable: X\n    type: Double\n    type: Int32\n")
    with pytest.raises(ScadaConfigError) as info:
        load_node_list(path)
    assert str(info.value) == f"{path}:4: nodes[0].type: duplicate key (first given on line 3)"
    path.write_bytes(b"nodes:\n  - variable: \xff\n")
    with pytest.raises(ScadaConfigError) as info:
        load_node_list(path)
    assert str(info.value) == f"{path}:2: not UTF-8 text (byte 0xff at column 15)"
