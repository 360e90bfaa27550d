"""NodeSet2 files in load order: each after the models it requires (dependencies first)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from .nodelist import ScadaConfigError

UA_NS = "http://opcfoundation.org/UA/"
NODESET_NS = "{http://opcfoundation.org/UA/2011/03/UANodeSet.xsd}"


def nodeset_order(paths: Sequence[str | Path]) -> list[Path]:
    """NodeSet2 files sorted so each comes after the models it requires; checks they parse."""
    provides: dict[str, Path] = {}
    requires: dict[Path, set[str]] = {}
    uses: dict[Path, set[str]] = {}
    for p in map(Path, paths):
        models, requires[p], uses[p] = _models(p)
        provides.update(dict.fromkeys(models, p))
    for p in requires:  # namespaces a file uses and another file provides: load that first
        requires[p] |= {u for u in uses[p] if provides.get(u) not in (None, p)}
    ordered: list[Path] = []
    pending = list(requires)
    while pending:
        ready = [
            p
            for p in pending
            if all(provides.get(u) in (*ordered, p) for u in requires[p] - {UA_NS})
        ]
        if not ready:
            p = pending[0]
            missing = sorted(u for u in requires[p] - {UA_NS} if u not in provides)
            message = (
                f"requires the model(s) {', '.join(missing) or '(a cycle)'}: add their NodeSet"
            )
            raise ScadaConfigError(p, 1, "", message)
        ordered += ready
        pending = [p for p in pending if p not in ready]
    return ordered


def _models(path: Path) -> tuple[list[str], set[str], set[str]]:
    """A NodeSet2 file's models, the models they require, and the namespaces it uses."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        line = exc.position[0] if exc.position else 1
        raise ScadaConfigError(path, line, "", f"malformed NodeSet XML: {exc.msg}") from None
    except OSError as exc:
        raise ScadaConfigError(path, 0, "", f"cannot read: {exc.strerror}") from None
    if not root.tag.endswith("UANodeSet"):
        raise ScadaConfigError(path, 1, "", f"not a NodeSet2 file (root element {root.tag!r})")
    models, required = [], set()
    for model in root.iter(f"{NODESET_NS}Model"):
        models.append(model.get("ModelUri", ""))
        required |= {r.get("ModelUri", "") for r in model.iter(f"{NODESET_NS}RequiredModel")}
    uses = {(u.text or "").strip() for u in root.iter(f"{NODESET_NS}Uri")}
    return models, required, uses
