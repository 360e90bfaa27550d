"""NodeSet2 load order (twins/nodeset_order.py) on small NodeSet files written here:
dependencies first, from RequiredModel and from namespaces used; clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from restoredrill.twins.nodelist import ScadaConfigError
from restoredrill.twins.nodeset_order import nodeset_order


def nodeset(
    folder: Path, name: str, model: str, requires: tuple[str, ...] = (), uses: tuple[str, ...] = ()
) -> Path:
    """A minimal NodeSet2 file providing ``model``, requiring ``requires``, naming ``uses``."""
    uris = "".join(f"<Uri>{u}</Uri>" for u in (model, *uses))
    required = "".join(f'<RequiredModel ModelUri="{r}" Version="1.0"/>' for r in requires)
    path = folder / f"{name}.xml"
    path.write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<UANodeSet xmlns="http://opcfoundation.org/UA/2011/03/UANodeSet.xsd">\n'
        f"  <NamespaceUris>{uris}</NamespaceUris>\n"
        f'  <Models><Model ModelUri="{model}" Version="1.0">'
        f'<RequiredModel ModelUri="http://opcfoundation.org/UA/" Version="1.04"/>{required}'
        "</Model></Models>\n"
        "</UANodeSet>\n"
    )
    return path


def test_dependencies_come_first_whatever_the_order_given(tmp_path: Path) -> None:
    di = nodeset(tmp_path, "di", "urn:di")
    machinery = nodeset(tmp_path, "machinery", "urn:machinery", requires=("urn:di",))
    vendor = nodeset(tmp_path, "vendor", "urn:vendor", uses=("urn:machinery",))  # no Required
    assert nodeset_order([vendor, machinery, di]) == [di, machinery, vendor]
    assert nodeset_order([str(di), str(vendor), str(machinery)]) == [di, machinery, vendor]


def test_independent_files_keep_their_order(tmp_path: Path) -> None:
    a, b, c = (nodeset(tmp_path, n, f"urn:{n}") for n in ("a", "b", "c"))
    assert nodeset_order([c, a, b]) == [c, a, b]


def test_a_missing_model_is_named_with_the_file_that_needs_it(tmp_path: Path) -> None:
    machinery = nodeset(tmp_path, "machinery", "urn:machinery", requires=("urn:di",))
    with pytest.raises(ScadaConfigError) as info:
        nodeset_order([machinery])
    assert str(info.value) == f"{machinery}:1: requires the model(s) urn:di: add their NodeSet"


def test_a_cycle_is_named(tmp_path: Path) -> None:
    a = nodeset(tmp_path, "a", "urn:a", requires=("urn:b",))
    b = nodeset(tmp_path, "b", "urn:b", requires=("urn:a",))
    with pytest.raises(ScadaConfigError, match=r"requires the model\(s\) \(a cycle\)"):
        nodeset_order([a, b])


def test_files_that_are_no_nodeset_are_refused_with_their_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.xml"
    broken.write_text("<UANodeSet>\n  <Models>\n</UANodeSet>\n")
    with pytest.raises(ScadaConfigError, match=r"broken\.xml:3: malformed NodeSet XML: mismatched"):
        nodeset_order([broken])
    other = tmp_path / "other.xml"
    other.write_text("<html/>")
    with pytest.raises(ScadaConfigError, match=r"other\.xml:1: not a NodeSet2 file"):
        nodeset_order([other])
    with pytest.raises(ScadaConfigError, match=r"missing\.xml: cannot read: No such file"):
        nodeset_order([tmp_path / "missing.xml"])
