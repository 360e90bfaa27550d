"""The emulator image's Python tree (twins/emulator_image.py) imports on its own, in a
Python started isolated (-I -S) on it. Moved out of tests/unit: it starts a Python process
(an integration test by nature)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "config" / "demo" / "plc"


def test_emulator_image_files_import_on_their_own(tmp_path: Path) -> None:
    """The emulator image holds what the PLC and SCADA twins import, the loader included."""
    from restoredrill.twins.emulator_image import assemble

    site = tmp_path / "site-packages"
    assemble(site)
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from restoredrill import configfile;"
        "from restoredrill.twins import plc, scada;"
        "m = plc.load_register_map(sys.argv[2]); n = scada.load_node_list(sys.argv[3]);"
        "print(configfile.PARSER.__name__, len(m.tags), len(n.nodes))"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            script,
            str(site),
            str(DEMO / "line1.yaml"),
            str(DEMO / "line1-opcua.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "CSafeLoader"
