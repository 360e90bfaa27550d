"""The demo plant: where it lives, what it must show, and making its backups (offline, once).

The backups are made by :mod:`restoredrill.twins.demo_plant` (a restic repository, image
archives, a root-filesystem tarball, a broken archive, and the HMI VM's disk images).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

REPO = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO / "config" / "demo"
DEMO_SITE = DEMO_DIR / "site.yaml"
APPS = DEMO_DIR / "apps"
BACKUPS = DEMO_DIR / "backups"
EXPECTED = {
    "historian": "pass",
    "mes": "pass",
    "hmi": "pass",
    "line1-gateway": "pass",
    "erp": "error",  # its newest backup is truncated
    "reporting": "blocked",  # it depends on the ERP
    "line2-gateway": "fail",  # its restored config reads the wrong register
    "hmi-vm": "pass",  # a whole disk image (.vmdk) booted as a VM at its production address
    "hmi-vm-broken": "error",  # its .vhdx lost its kernel: the console's last lines say so
}
"""What the demo plant must show: the good systems pass, each broken one is caught."""


SIGNING_KEY = Path(".restoredrill") / "keys" / "site.key"
"""The demo's signing key, beside its site file (site.yaml's signing_key). A plant keeps
its key where the evidence database's owner cannot read it; the demo keeps it beside its
evidence."""


def prepare(
    console: Console, backups: Path = BACKUPS, apps: Path = APPS, tag: str = "restoredrill-demo"
) -> None:
    """Make whatever demo backups (and the demo's signing key) are missing, or older than
    the app they hold (:func:`restoredrill.twins.demo_plant.make_backups`).

    ``apps`` holds the demo applications (a copy may carry other addresses); the images
    built on the way are tagged ``<tag>/<name>:build`` and removed again.
    """
    from restoredrill.twins.demo_plant import make_backups

    def made(label: str, seconds: float) -> None:
        console.print(f"demo: made the {label} in {seconds:.1f}s")

    from .signing import fingerprint, keygen

    key = backups.parent / SIGNING_KEY
    if not key.exists():
        signer = keygen(key)
        console.print(f"demo: made the site's signing key {fingerprint(signer.keyid)}")
    make_backups(
        backups, apps, tag, status=lambda label: console.status(f"demo: {label}"), made=made
    )
    _renew(backups, console)


def _renew(backups: Path, console: Console) -> None:
    """Backups older than half their RPO are made again (flows/demo_refresh.py), as a
    plant's nightly job would: the demo shows the same verdicts next week."""
    from .demo_refresh import refresh

    site = backups.parent / "site.yaml"
    if site.is_file():
        refresh(site, console)
