"""Which evidence store a command means: ``--evidence``, ``--site``, ``$RESTOREDRILL_EVIDENCE``,
or the one used last here (remembered without its password)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from restoredrill.errors import InputError

from ..inventory import load_site

if TYPE_CHECKING:
    from ..evidence import EvidenceStore

LAST_EVIDENCE = (
    Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    / "restoredrill"
    / "last-evidence"
)


def open_store(url: str | None, site: Path | None, read_only: bool = False) -> EvidenceStore:
    """The store of ``--evidence``, else of ``--site``, else $RESTOREDRILL_EVIDENCE, else the
    one last used here (``read_only``: nothing is written to it)."""
    from ..evidence import EvidenceStore, default_url

    if url is None and site is not None:
        url = load_site(site).site.evidence if site.exists() else None
        url = url or default_url(site)
    url = url or os.environ.get("RESTOREDRILL_EVIDENCE") or _recall()
    if url is None:
        raise InputError("which evidence? give --site SITE or --evidence URL")
    store = EvidenceStore.reader(url) if read_only else EvidenceStore(url)
    if not read_only:
        remember(site, url)
    return store


def remember(site: Path | None, url: str | None) -> None:
    """Keep which store was used last, without its password: the site file if there is
    one (its ``evidence:`` names the store), else the URL without the password."""
    from ..evidence import without_password

    if site is not None:
        data = {"site": str(Path(site).resolve())}
    elif url is not None and (plain := without_password(url)) is not None:
        data = {"url": plain}
    else:
        return
    with contextlib.suppress(OSError):
        LAST_EVIDENCE.parent.mkdir(parents=True, exist_ok=True)
        LAST_EVIDENCE.unlink(missing_ok=True)
        fd = os.open(LAST_EVIDENCE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)


def _recall() -> str | None:
    """The URL of the store used last (see remember); a URL an older version kept with
    its password is used once and rewritten without it."""
    from ..evidence import default_url

    try:
        text = LAST_EVIDENCE.read_text().strip()
    except OSError:
        return None
    if not text.startswith("{"):
        remember(None, text)
        return text or None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if data.get("site"):
        site = Path(data["site"])
        if not site.is_file():
            raise InputError(
                f"the site used last, {site}, is gone: give --site SITE or --evidence URL"
            )
        return load_site(site).site.evidence or default_url(site)
    return data.get("url")
