"""Which endpoints of a run are snapshotted, and what ranges their moving values keep."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

from restoredrill.flows.inventory import load_site
from restoredrill.flows.snapshots import _bound_ranges, _device_plans, _system_plans

REPO = Path(__file__).resolve().parents[2]


def test_a_system_serving_modbus_is_read_with_its_plc_map_and_opcua_with_check_ranges(tmp_path):
    (tmp_path / "plc").mkdir()
    shutil.copy(REPO / "config/demo/plc/line1.yaml", tmp_path / "plc/line1.yaml")
    shutil.copy(REPO / "config/demo/plc/line1-opcua.yaml", tmp_path / "plc/line1-opcua.yaml")
    (tmp_path / "site.yaml").write_text(textwrap.dedent("""\
        site: ep
        sandbox: {subnets: [10.251.1.0/24]}
        devices:
          - {kind: plc, name: line1-plc, address: 10.251.1.100, map: plc/line1.yaml}
          - {kind: scada, name: scada1, address: 10.251.1.101, nodes: plc/line1-opcua.yaml, plcs: [line1-plc]}
        systems:
          - name: gw
            devices: [line1-plc]
            backup: {kind: image_archive, path: gw.tar}
            run: {address: 10.251.1.60}
            rto: 3m
            checks:
              - {kind: modbus, port: 5020, unit: 3, values: [{table: input, address: 0, type: float32}]}
              - {kind: modbus, host: 10.251.1.100, values: [{table: input, address: 0, type: float32}]}
              - kind: opcua
                path: gateway/
                values:
                  - {node: Objects/2:Line1/2:TankLevel, min: 40, max: 60, changes: true}
                  - {node: Objects/2:Line1/2:OutletFlow, changes: true}
        """))  # fmt: skip
    loaded = load_site(tmp_path / "site.yaml")
    plans = _system_plans(loaded, loaded.site.system("gw"), "10.251.1.60", 1.0)
    assert [(owner, url) for owner, url, _ in plans] == [
        ("system gw modbus 5020 unit 3 (map of line1-plc)", "modbus://10.251.1.60:5020"),
        ("system gw opcua 4840/gateway/", "opc.tcp://10.251.1.60:4840/gateway/"),
    ]  # the check of the PLC's own address is not the system's endpoint
    [(owner, url, _)] = _device_plans(loaded, loaded.site.devices[1], 1.0)
    assert (owner, url) == ("device scada1 opcua", "opc.tcp://10.251.1.101:4840/")
    assert _bound_ranges(loaded, loaded.site.devices[1]) == {
        "Objects/Line1/TankLevel": (40, 60),  # sine 40..60
        "Objects/Line1/OutletFlow": (0, 500),  # ramp 0..500
        "Objects/Line1/PumpStarts": (None, None),  # a counter moves, with no range to keep
    }  # setpoints and constants do not move
