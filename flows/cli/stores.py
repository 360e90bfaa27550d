"""Which evidence store a command means: ``--evidence``, ``--site``, ``$RESTOREDRILL_EVIDENCE``,
or the one used last here (remembered without its password); which key signs what it
appends (``--key``, ``$RESTOREDRILL_SIGNING_KEY``, the site file's ``signing_key``); and the
periods commands take (``--since``, ``--keep``)."""

from __future__ import annotations

import contextlib
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from restoredrill.errors import InputError

from ..inventory import load_site

if TYPE_CHECKING:
    from ..evidence import EvidenceStore
    from ..signing import Signer

LAST_EVIDENCE = (
    Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    / "restoredrill"
    / "last-evidence"
)


def open_store(
    url: str | None, site: Path | None, read_only: bool = False, signer: Signer | None = None
) -> EvidenceStore:
    """The store of ``--evidence``, else of ``--site``, else $RESTOREDRILL_EVIDENCE, else the
    one last used here (``read_only``: nothing is written to it; ``signer`` signs what is
    appended)."""
    from ..evidence import EvidenceStore, default_url

    if url is None and site is not None:
        url = load_site(site).site.evidence if site.exists() else None
        url = url or default_url(site)
    url = url or os.environ.get("RESTOREDRILL_EVIDENCE") or _recall()
    if url is None:
        raise InputError("which evidence? give --site SITE or --evidence URL")
    store = EvidenceStore.reader(url) if read_only else EvidenceStore(url, signer=signer)
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


def signer_for(key: Path | None, site: Path | None) -> Signer | None:
    """--key, else $RESTOREDRILL_SIGNING_KEY, else the site file's signing_key."""
    from ..signing import configured, load_signer

    if key is not None:
        return load_signer(key, "--key")
    if site is not None and site.exists():
        loaded = load_site(site)
        return configured(loaded.site.signing_key, loaded.base_dir)
    return configured()


def period(text: str | None, option: str) -> timedelta:
    """A period given to ``option`` (e.g. ``30d``), longer than zero."""
    from restoredrill.durations import parse_duration

    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise InputError(f"{option} {exc}") from None
    if value.total_seconds() <= 0:
        raise InputError(f"{option} {text!r}: give a period longer than zero, e.g. 30d")
    return value
