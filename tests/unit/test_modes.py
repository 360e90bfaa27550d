"""File modes as an inventory writes them, read the same by run.files and host checks."""

from __future__ import annotations

import pytest

from restoredrill.checks.host import HostCheck
from restoredrill.configfile import parse
from restoredrill.errors import InputError
from restoredrill.modes import parse_mode
from restoredrill.twins.files import FileSpec


@pytest.mark.parametrize(
    ("written", "mode"),
    [('"0640"', "0640"), ("0640", "0640"), ("640", "0640"), ("0o640", "0640"), ("4755", "4755")],
)
def test_a_mode_reads_as_written_in_run_files_and_host_checks(written: str, mode: str) -> None:
    value = parse(f"mode: {written}\n", "site.yaml").data["mode"]
    assert parse_mode(value) == mode
    assert FileSpec(source="a", target="/a", mode=value).mode == mode
    assert HostCheck(kind="host", file="/a", mode=value).mode == mode


@pytest.mark.parametrize("written", ['"999"', "12", "true", '"rwxr-x---"'])
def test_what_is_no_mode_is_refused(written: str) -> None:
    with pytest.raises(InputError, match="is not a file mode"):
        parse_mode(parse(f"mode: {written}\n", "site.yaml").data["mode"])
