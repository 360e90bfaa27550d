"""The field-device emulator image, assembled offline from what is installed here.

Inside a sandbox, PLC and SCADA twins run as containers at their production
addresses. Their image is built FROM the local base image with the emulator code
and its Python dependencies copied from this installation (same CPython minor
version, so compiled wheels fit): no registry, no package index, which is how an
air-gapped plant has to work.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from .images import DEFAULT_BASE, build_image, ensure_base_image, image_exists

ROOTS = ("pymodbus", "asyncua", "pydantic", "PyYAML")
"""Distributions the emulators import (their dependencies are followed)."""
PACKAGE = Path(__file__).resolve().parent
ROOT_MODULES = ("__init__.py", "configfile.py", "durations.py", "errors.py", "lazy.py")
"""Modules of the package root that twins/ imports (never flows/ or Prefect)."""
DOCKERFILE = """\
ARG BASE
FROM ${BASE}
COPY site-packages/ /usr/local/lib/python3.11/dist-packages/
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
"""


def _requirements(dist: md.Distribution) -> list[str]:
    names = []
    for req in dist.requires or []:
        if ";" in req and "extra" in req.split(";", 1)[1]:
            continue
        if ";" in req:
            marker = req.split(";", 1)[1]
            try:
                from packaging.markers import Marker

                if not Marker(marker).evaluate():
                    continue
            except Exception:  # noqa: BLE001 - keep it when unsure
                pass
        names.append(re.split(r"[\s<>=!~\[;(]", req, maxsplit=1)[0])
    return names


def distributions(roots: tuple[str, ...] = ROOTS) -> list[md.Distribution]:
    """The installed distributions the emulators need, dependencies included."""
    seen: dict[str, md.Distribution] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        seen[key] = dist
        todo.extend(_requirements(dist))
    return sorted(seen.values(), key=lambda d: d.metadata["Name"].lower())


def _copy_dist(dist: md.Distribution, dest: Path) -> None:
    for file in dist.files or []:
        src = Path(str(dist.locate_file(file)))
        if not src.is_file() or "__pycache__" in file.parts or file.parts[0] == "..":
            continue
        target = dest / file
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def _copy_restoredrill(dest: Path) -> None:
    """Only what the emulators import: the package root and twins/ (never flows/ or Prefect)."""
    root = dest / "restoredrill"
    root.mkdir(parents=True)
    for name in ROOT_MODULES:
        shutil.copy2(_package_root() / name, root / name)
    shutil.copytree(PACKAGE, root / "twins", ignore=shutil.ignore_patterns("__pycache__"))


def _package_root() -> Path:
    import restoredrill

    return Path(restoredrill.__file__).resolve().parent


def assemble(site: Path) -> None:
    """Fill ``site`` with what the emulators import: their distributions and twins/."""
    site.mkdir(parents=True)
    for dist in distributions():
        _copy_dist(dist, site)
    _copy_restoredrill(site)


def fingerprint() -> str:
    """Changes when the emulator code or a dependency version changes."""
    h = hashlib.sha256(sys.version.encode())
    for dist in distributions():
        h.update(f"{dist.metadata['Name']}=={dist.version};".encode())
    for path in sorted(PACKAGE.rglob("*.py")):
        h.update(path.read_bytes())
    for name in ROOT_MODULES:
        h.update((_package_root() / name).read_bytes())
    return h.hexdigest()[:12]


def ensure_emulator_image(client: Any, base: str = DEFAULT_BASE) -> str:
    """The tag of an emulator image for this installation, built if missing."""
    tag = f"restoredrill/emulator:{fingerprint()}"
    if image_exists(client, tag):
        return tag
    ensure_base_image(client, base)
    with tempfile.TemporaryDirectory(prefix="restoredrill-emulator-") as tmp:
        ctx = Path(tmp)
        assemble(ctx / "site-packages")
        (ctx / "Dockerfile").write_text(DOCKERFILE)
        build_image(client, ctx, tag, base=base, labels={"restoredrill.image": "emulator"})
    return tag
