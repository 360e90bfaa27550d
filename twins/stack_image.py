"""The stack image: Prefect server, restoredrill workers and PostgreSQL, built offline.

``docker-compose.yml`` runs every service from ``restoredrill/stack:local``. The image
is ``deploy/Dockerfile`` FROM a local Debian base (python3, PostgreSQL 15, ...) with
the whole ``restoredrill`` package and every installed distribution it needs at
runtime (its ``postgres`` extra and asyncpg included) copied from this installation
(same CPython minor version, so compiled wheels fit), ``restoredrill``/``prefect``
console scripts, and the host's ``docker`` and ``restic`` binaries. No registry, no
package index.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as md
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

from .emulator_image import _copy_dist
from .images import LABEL, ImageError, build_image, ensure_base_image, image_exists

STACK_PACKAGES = (
    "python3",
    "procps",
    "iproute2",
    "postgresql",
    "ca-certificates",
    "tzdata",
    "netbase",
    "iptables",
)
"""Debian packages of the stack base: the interpreter, PostgreSQL 15 and basic tools
(iptables: a worker that opens a run's sandbox sets up its host firewall rules)."""
STACK_BASE = (
    "restoredrill/stack-base:bookworm-"
    + hashlib.sha256(",".join(STACK_PACKAGES).encode()).hexdigest()[:8]
)
"""Tagged by its package list: a base built before a package was added is not reused."""
REPOSITORY = "restoredrill/stack"
LOCAL_TAG = f"{REPOSITORY}:local"
ROOTS = ("restoredrill[postgres]", "asyncpg")
"""What the stack runs (dependencies are followed; asyncpg: Prefect's server on PostgreSQL)."""
SCRIPTS = {"restoredrill": "restoredrill", "prefect": "prefect"}
"""Console scripts installed as /usr/local/bin wrappers: script name -> distribution."""
BINARIES = {
    "docker": "the Docker CLI (testinfra's docker backend calls it): apt-get install docker.io or docker-ce-cli",
    "restic": "restic (restic backup sources call it): apt-get install restic",
}
"""Host binaries copied into /usr/local/bin (dynamically linked to glibc only)."""
STAND_INS = {
    "async-timeout": (
        "async_timeout/__init__.py",
        '"""Stand-in for async-timeout: asyncio.timeout, whose API 4.0.3+ mirrors (redis\n'
        "imports async_timeout on Python < 3.11.3, e.g. Debian's 3.11.2; it is not installed\n"
        'where the image was built, the interpreter there being newer)."""\n\n'
        "from asyncio import Timeout, timeout, timeout_at\n\n"
        '__all__ = ["Timeout", "timeout", "timeout_at"]\n',
    ),
}
"""Needed by the image's Python only; if not installed here: (file in site-packages, text)."""
PACKAGE = Path(__file__).resolve().parent
REPO = PACKAGE.parent
DOCKERFILE = REPO / "deploy" / "Dockerfile"
# restoredrill's code: import path below the package -> source directory
_SOURCES = {
    "": REPO / "restoredrill",
    "flows": REPO / "flows",
    "twins": PACKAGE,
    "checks": REPO / "checks",
}


_TARGET_PYTHON: dict[str, str] = {}


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed(name: str) -> md.Distribution:
    """The installed distribution ``name``, preferring one an installer wrote over a stray
    ``*.egg-info`` in the working directory (a source checkout has one)."""
    found = list(md.distributions(name=name))
    if not found:
        raise md.PackageNotFoundError(name)
    return next((d for d in found if d.read_text("INSTALLER") is not None), found[0])


def target_python(client: Any, base: str = STACK_BASE) -> str:
    """The full version of the base image's ``python3`` (Debian's, not this interpreter)."""
    image_id = client.images.get(base).id
    if image_id not in _TARGET_PYTHON:
        out = client.containers.run(
            base,
            ["python3", "-c", "import platform; print(platform.python_version())"],
            remove=True,
            network_disabled=True,
            labels={LABEL: "probe"},
        )
        _TARGET_PYTHON[image_id] = out.decode().strip()
    version = _TARGET_PYTHON[image_id]
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if version.rsplit(".", 1)[0] != here:
        raise ImageError(
            f"{base} has Python {version} but this installation is Python {here}: "
            "compiled wheels would not fit; use a base of the same minor version"
        )
    return version


def distributions(
    roots: Iterable[str] = ROOTS, python: str | None = None
) -> tuple[list[md.Distribution], list[str]]:
    """The installed distributions ``roots`` need at runtime (requested extras included),
    and the names of needed ones not installed here that a stand-in replaces.

    Markers are evaluated for this interpreter and, with ``python``, for the image's one
    (``redis`` wants ``async-timeout`` below 3.11.3, which Debian's 3.11.2 is)."""
    envs: list[dict[str, str]] = [{}]
    if python:
        envs.append(
            {
                "python_full_version": python,
                "python_version": python.rsplit(".", 1)[0],
                "implementation_version": python,
            }
        )
    seen: dict[str, md.Distribution] = {}
    extras: dict[str, set[str]] = {}
    stand_ins: set[str] = set()
    todo = [Requirement(root) for root in roots]
    while todo:
        req = todo.pop()
        key = _key(req.name)
        wanted = set(req.extras) - extras.get(key, set())
        if key in seen and not wanted:
            continue
        dist = seen.get(key)
        if dist is None:
            try:
                dist = _installed(req.name)
            except md.PackageNotFoundError:
                if key in STAND_INS:
                    stand_ins.add(key)
                    continue
                raise ImageError(
                    f"{req.name} is needed in the stack image but is not installed here "
                    f"(pip install '{req}')"
                ) from None
        seen[key] = dist
        extras.setdefault(key, set()).update(wanted)
        for line in dist.requires or []:
            dep = Requirement(line)
            if dep.marker is None or any(
                dep.marker.evaluate({**env, "extra": extra})
                for env in envs
                for extra in ("", *extras[key])
            ):
                todo.append(dep)
    dists = sorted(seen.values(), key=lambda d: _key(d.metadata["Name"]))
    return dists, sorted(stand_ins)


def _source_files() -> list[tuple[str, Path]]:
    """restoredrill's files (code and package data) as (path inside the package, source)."""
    files = []
    for sub, folder in _SOURCES.items():
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if path.is_file() and "__pycache__" not in rel.parts and path.suffix != ".pyc":
                files.append(((Path(sub) / rel).as_posix(), path))
    return files


def _copy_restoredrill(dist: md.Distribution, site: Path) -> None:
    """The whole package (root, flows/, twins/, checks/) and a plain dist-info for it."""
    for rel, src in _source_files():
        target = site / "restoredrill" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    info = site / f"restoredrill-{dist.version}.dist-info"
    info.mkdir()
    meta = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    (info / "METADATA").write_text(meta)
    (info / "entry_points.txt").write_text(dist.read_text("entry_points.txt") or "")
    (info / "top_level.txt").write_text("restoredrill\n")
    (info / "INSTALLER").write_text("restoredrill-stack\n")


def _wrapper(name: str, dist_name: str) -> str:
    """A ``#!/usr/bin/python3`` script calling console script ``name`` of ``dist_name``."""
    points = [
        ep
        for ep in _installed(dist_name).entry_points
        if ep.group == "console_scripts" and ep.name == name
    ]
    if not points:
        raise ImageError(f"{dist_name} has no console script {name!r}")
    module, _, attr = points[0].value.partition(":")
    head, *rest = attr.strip().split(".")
    call = ".".join([head, *rest])
    return (
        "#!/usr/bin/python3\n"
        "import sys\n"
        f"from {module.strip()} import {head}\n"
        "if __name__ == '__main__':\n"
        "    sys.argv[0] = sys.argv[0].removesuffix('.exe')\n"
        f"    sys.exit({call}())\n"
    )


def _binary(name: str) -> Path:
    found = shutil.which(name) or f"/usr/bin/{name}"
    path = Path(found).resolve()
    if not path.is_file():
        raise ImageError(f"the stack image needs {BINARIES[name]} (no {name} on this host)")
    return path


def fingerprint(client: Any, base: str = STACK_BASE) -> str:
    """Changes with the code, a dependency's version, the Dockerfile, the base or a binary."""
    return _fingerprint(client, base, *distributions(python=target_python(client, base)))


def _fingerprint(client: Any, base: str, dists: list[md.Distribution], stand_ins: list[str]) -> str:
    h = hashlib.sha256(f"{sys.version_info[:2]}".encode())
    h.update(client.images.get(base).id.encode())
    h.update(DOCKERFILE.read_bytes())
    for dist in dists:
        h.update(f"{dist.metadata['Name']}=={dist.version};".encode())
    for key in stand_ins:
        h.update(STAND_INS[key][1].encode())
    for rel, src in _source_files():
        h.update(rel.encode() + b"\0" + src.read_bytes())
    for name in BINARIES:
        stat = _binary(name).stat()
        h.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return h.hexdigest()[:12]


def ensure_stack_image(client: Any, base: str = STACK_BASE) -> str:
    """Tag of the stack image for this installation, built if missing; also tagged
    ``restoredrill/stack:local`` (what docker-compose.yml runs)."""
    if not DOCKERFILE.is_file():
        raise ImageError(f"{DOCKERFILE} not found: build the stack image from a source checkout")
    ensure_base_image(client, base, packages=STACK_PACKAGES)
    dists, stand_ins = distributions(python=target_python(client, base))
    fp = _fingerprint(client, base, dists, stand_ins)
    tag = f"{REPOSITORY}:{fp}"
    if not image_exists(client, tag):
        with tempfile.TemporaryDirectory(prefix="restoredrill-stack-") as tmp:
            ctx = Path(tmp)
            _assemble(ctx, dists, stand_ins)
            build_image(
                client,
                ctx,
                tag,
                base=base,
                labels={LABEL: "stack", "restoredrill.fingerprint": fp},
            )
    client.images.get(tag).tag(REPOSITORY, "local")
    _prune(client, keep=tag)
    return tag


def _prune(client: Any, keep: str) -> None:
    """Remove superseded stack images (older fingerprints) that no container uses."""
    import docker.errors

    current = client.images.get(keep).id
    for image in client.images.list(filters={"label": f"{LABEL}=stack"}):
        if image.id == current:
            continue
        for name in image.tags:  # one in use by a container is kept until the next build
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(name, noprune=False)


def _assemble(ctx: Path, dists: list[md.Distribution], stand_ins: list[str]) -> None:
    """The build context: Dockerfile, site-packages/ and bin/."""
    site = ctx / "site-packages"
    site.mkdir()
    for dist in dists:
        if _key(dist.metadata["Name"]) == "restoredrill":
            _copy_restoredrill(dist, site)
        else:
            _copy_dist(dist, site)
    for key in stand_ins:
        rel, text = STAND_INS[key]
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
    bin_dir = ctx / "bin"
    bin_dir.mkdir()
    for name, dist_name in SCRIPTS.items():
        (bin_dir / name).write_text(_wrapper(name, dist_name))
        (bin_dir / name).chmod(0o755)
    for name in BINARIES:
        shutil.copy2(_binary(name), bin_dir / name)
        (bin_dir / name).chmod(0o755)
    shutil.copy2(DOCKERFILE, ctx / "Dockerfile")


def build_on_local_engine(base: str = STACK_BASE) -> str:
    """:func:`ensure_stack_image` on the Docker engine of this machine (``DOCKER_HOST``)."""
    from .docker import DockerBackend

    return ensure_stack_image(DockerBackend().client, base)
