"""The inventory: valid sites load; every mistake is named by file, line and field."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from sites import BAD_INPUTS, GOOD

from restoredrill.errors import InputError
from restoredrill.flows.inventory import InventoryError, find_cycle, load_site, waves

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo" / "site.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(InventoryError) as info:
        load_site(write(tmp_path, text))
    return info.value.problems


def test_good_site_loads_with_durations_and_plan(tmp_path: Path) -> None:
    loaded = load_site(write(tmp_path, GOOD))
    mes = loaded.site.system("mes")
    assert mes.rto.total_seconds() == 5400
    assert loaded.site.system("historian").rpo.total_seconds() == 86400
    assert waves({s.name: s.depends_on for s in loaded.site.systems}) == [["historian"], ["mes"]]
    assert loaded.resolve("backups/h.tar") == tmp_path / "backups" / "h.tar"


def test_demo_site_is_valid(tmp_path: Path) -> None:
    """The demo site, on a paper subnet (a demo running meanwhile holds its own)."""
    paper = tmp_path / "site.yaml"
    paper.write_text(DEMO.read_text().replace("10.77.0.", "10.249.78."))
    loaded = load_site(paper)
    assert {s.name for s in loaded.site.systems} >= {"historian", "mes", "hmi", "erp"}


def test_bad_duration_names_file_line_and_field(tmp_path: Path) -> None:
    out = problems(tmp_path, GOOD.replace("rto: 1h30m", "rto: 15 mins"))
    assert out == [
        f'{tmp_path / "site.yaml"}:17: systems[1].rto: "15 mins" is not a duration (use 15m, 90s, 1h30m)'
    ]


def test_unknown_key_is_rejected_with_the_keys_expected(tmp_path: Path) -> None:
    out = problems(tmp_path, GOOD.replace("    rpo: 1d\n", "    rpo: 1d\n    rpoo: 2d\n"))
    assert len(out) == 1
    assert out[0].startswith(f"{tmp_path / 'site.yaml'}:14: systems[0].rpoo: unknown key 'rpoo'")
    assert "rto" in out[0] and "depends_on" in out[0]


def test_unknown_key_inside_a_backup_source_names_its_fields(tmp_path: Path) -> None:
    out = problems(tmp_path, GOOD.replace("path: backups/m.tar}", "path: backups/m.tar, pth: x}"))
    assert out[0].startswith(f"{tmp_path / 'site.yaml'}:15: systems[1].backup.pth: unknown key")
    assert "pattern" in out[0]


def test_unknown_backup_kind(tmp_path: Path) -> None:
    out = problems(tmp_path, GOOD.replace("kind: image_archive, path: backups/m.tar", "kind: tape"))
    assert "systems[1].backup: unknown kind 'tape'" in out[0]
    assert "restic" in out[0] and ":15:" in out[0]


def test_missing_field(tmp_path: Path) -> None:
    out = problems(tmp_path, GOOD.replace("    rto: 1h30m\n", ""))
    assert out == [f"{tmp_path / 'site.yaml'}:14: systems[1].rto: is required"]


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    out = problems(tmp_path, GOOD.replace("rto: 15m", "rto: [15m"))
    assert len(out) == 1 and "malformed YAML" in out[0]
    assert out[0].startswith(f"{tmp_path / 'site.yaml'}:")


def test_unknown_dependency(tmp_path: Path) -> None:
    out = problems(tmp_path, GOOD.replace("depends_on: [historian]", "depends_on: [histrian]"))
    assert out == [
        f"{tmp_path / 'site.yaml'}:16: systems[1].depends_on[0]: unknown system 'histrian' "
        "(known: historian, mes)"
    ]


def test_dependency_cycle_is_printed(tmp_path: Path) -> None:
    text = GOOD.replace("    rpo: 1d\n", "    rpo: 1d\n    depends_on: [mes]\n")
    out = problems(tmp_path, text)
    assert len(out) == 1
    assert "dependency cycle: historian -> mes -> historian" in out[0]


def test_address_outside_the_sandbox_and_clash(tmp_path: Path) -> None:
    out = problems(tmp_path, GOOD.replace("address: 10.249.77.10", "address: 10.20.3.15"))
    assert "systems[0].run.address: 10.20.3.15 is outside the sandbox subnets" in out[0]
    clash = GOOD.replace(
        "    depends_on: [historian]\n",
        "    depends_on: [historian]\n    run: {address: 10.249.77.10}\n",
    )
    out = problems(tmp_path, clash)
    assert "10.249.77.10 is already the address of system historian" in out[0]


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    text = GOOD.replace("rto: 15m", "rto: soon").replace("zone: ot", "zone: factory")
    out = problems(tmp_path, text)
    assert len(out) == 2
    assert any("systems[0].labels.zone" in p for p in out)


def test_find_cycle_and_waves_with_selection() -> None:
    graph = {"a": [], "b": ["a"], "c": ["b"], "d": []}
    assert find_cycle(graph) is None
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert waves(graph, ["c"]) == [["a"], ["b"], ["c"]]
    assert waves(graph) == [["a", "d"], ["b"], ["c"]]
    with pytest.raises(InputError, match=r"dependency cycle: \['a', 'b', 'a'\]"):
        waves({"a": ["b"], "b": ["a"]})


def test_checked_in_schema_is_current() -> None:
    from restoredrill.flows.schema import site_schema

    checked_in = json.loads((DEMO.parents[1] / "site.schema.json").read_text())
    assert checked_in == site_schema(), "run: restoredrill schema -o config/site.schema.json"


def test_bad_cron_and_time_zone_name_line_and_field(tmp_path: Path) -> None:
    text = GOOD.replace(
        "site: plant\n", "site: plant\nschedule: '0 2 * *'\ntimezone: Europe/Gotham\n"
    )
    text = text.replace("    rto: 1h30m\n", "    rto: 1h30m\n    schedule: '61 * * * *'\n")
    out = problems(tmp_path, text)
    path = tmp_path / "site.yaml"
    assert out == [
        f"{path}:2: schedule: '0 2 * *' is not a cron expression (5 fields: minute hour day "
        "month weekday, e.g. '0 2 * * *' nightly at 02:00, '30 3 * * sun' weekly, or @daily)",
        f"{path}:3: timezone: 'Europe/Gotham' is not an IANA time zone (e.g. Europe/Berlin, UTC)",
        f"{path}:20: systems[1].schedule: '61 * * * *' is not a cron expression (5 fields: "
        "minute hour day month weekday, e.g. '0 2 * * *' nightly at 02:00, '30 3 * * sun' "
        "weekly, or @daily)",
    ]
    ok = GOOD.replace("site: plant\n", "site: plant\nschedule: '@daily'\ntimezone: Europe/Berlin\n")
    assert load_site(write(tmp_path, ok)).site.schedule == "@daily"


# --- hostile and mistyped files: a clear error naming file and line, never a traceback -----


@pytest.mark.parametrize(
    ("name", "content", "expected"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_input_is_one_clear_problem(tmp_path: Path, name: str, content: bytes, expected: str):
    path = tmp_path / "site.yaml"
    path.write_bytes(content)
    with pytest.raises(InventoryError) as info:
        load_site(path)
    assert info.value.problems == [expected.format(path=path)]


def test_duplicate_device_names_point_at_the_repeat(tmp_path: Path) -> None:
    devices = (
        "devices:\n"
        "  - {kind: plc, name: plc1, address: 10.249.77.100, map: a.yaml}\n"
        "  - {kind: plc, name: plc2, address: 10.249.77.101, map: a.yaml}\n"
        "  - {kind: plc, name: plc1, address: 10.249.77.102, map: a.yaml}\n"
    )
    out = problems(tmp_path, GOOD.replace("systems:\n", devices + "systems:\n"))
    assert out == [
        f'{tmp_path / "site.yaml"}:7: devices[2].name: "plc1" is already the name of devices[0] '
        "(line 5); names must be unique"
    ]


def test_yaml_1_2_meanings_are_kept(tmp_path: Path) -> None:
    """``on:`` stays a key (YAML 1.1 would read true) and ``0o644`` stays an octal mode."""
    text = GOOD.replace(
        "      - {kind: tcp, port: 8080}\n",
        "      - {kind: tcp, port: 8080}\n      - {kind: host, file: /etc/x, mode: 0o644}\n",
    ).replace(
        "    rto: 15m\n", "    rto: 15m\n    alerts: [{url: 'json://127.0.0.1:9/x', on: [fail]}]\n"
    )
    historian = load_site(write(tmp_path, text)).site.system("historian")
    assert historian.checks[1].mode == "0644"
    assert historian.alerts[0].on == {"fail"}


def test_long_time_zone_name_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    out = problems(
        tmp_path, GOOD.replace("site: plant\n", f"site: plant\ntimezone: {'x' * 1000}\n")
    )
    assert out == [
        f'{tmp_path / "site.yaml"}:2: timezone: "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx… (1,000 characters)" '
        "is not an IANA time zone (e.g. Europe/Berlin, UTC)"
    ]


HOSTILE_VALUES = ["x" * 10_000, 10**30, float("inf"), float("nan"), -1, None, [], {"k": 1}]


def test_any_hostile_value_anywhere_is_an_inventory_error(tmp_path: Path) -> None:
    """Each value of a good site replaced by each hostile one: a problem list, never a crash."""
    import copy

    import yaml

    from restoredrill.configfile import parse

    base = parse(GOOD).data
    places: list[tuple] = []

    def walk(node: object, loc: tuple) -> None:
        items = (
            node.items()
            if isinstance(node, dict)
            else enumerate(node)
            if isinstance(node, list)
            else []
        )
        for key, child in items:
            places.append((*loc, key))
            walk(child, (*loc, key))

    walk(base, ())
    path = tmp_path / "site.yaml"
    for loc in places:
        for value in HOSTILE_VALUES:
            data = copy.deepcopy(base)
            node = data
            for part in loc[:-1]:
                node = node[part]
            node[loc[-1]] = value
            path.write_text(yaml.safe_dump(data, width=1 << 20))
            try:
                load_site(path)
            except InventoryError as exc:
                assert exc.problems and all(p.startswith(f"{path}:") for p in exc.problems)
