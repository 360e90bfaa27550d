"""A regression test in the evidence chain: one link of kind ``regression``.

The link's body (canonical JSON, hashed into the chain like every link, and signed with
the site's key when the chain is signed; see flows/chain.py) holds what was changed
(each file's path, status and the sha256 of both versions), the git revisions, what was
affected and ran, both runs' whole records, the differences found and the verdict, and
each snapshot's endpoint, size and sha256 (the snapshots themselves can be megabytes:
``--json`` prints them). ``restoredrill history`` lists the regressions after the runs.

If the store cannot take it (read-only, locked, unreachable), the body is kept in the
site's spool folder (``.restoredrill/spool/regressions/<id>.json``, or the user's) and
the command exits 3, as ``run`` does.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from . import chain
from .evidence import EvidenceError, EvidenceStore, chain_events_t, chain_head, default_url
from .inventory import LoadedSite

KIND = "regression"


def body(record: Any) -> dict[str, Any]:
    """What the chain keeps of a :class:`flows.regress.RegressionRecord`."""
    data = json.loads(record.model_dump_json())
    c = data["comparison"]
    return {
        "kind": KIND,
        "regression_id": data["regression_id"],
        "site": data["site"],
        "started_at": data["started_at"],
        "finished_at": data["finished_at"],
        "verdict": data["verdict"],
        "summary": data["summary"],
        "source": data["source"],
        "revisions": data["revisions"],
        "changed_files": data["changed_files"],
        "ignored_files": data["ignored_files"],
        "affected": data["affected"],
        "baseline": data["baseline"],
        "candidate": data["candidate"],
        "differences": {
            "systems": c["systems"],
            "checks": [d for d in c["checks"] if d["change"] != "unchanged"],
            "entries": c["entries"],
            "tolerance": c["tolerance"],
            "floor_s": c["floor_s"],
        },
        "snapshots": {
            side: [
                {
                    "owner": s["owner"],
                    "protocol": s["protocol"],
                    "endpoint": s["endpoint"],
                    "entries": len(s["entries"]),
                    "error": s["error"],
                    "sha256": hashlib.sha256(chain.dumps(s["entries"]).encode()).hexdigest(),
                }
                for s in shots
            ]
            for side, shots in data["snapshots"].items()
        },
    }


def record_regression(loaded: LoadedSite, record: Any) -> str | None:
    """Append the regression to the site's chain; on failure keep it in a spool file and
    return what happened (None: recorded)."""
    from .signing import SigningError, for_site

    data = body(record)
    try:
        store = EvidenceStore(
            loaded.site.evidence or default_url(loaded.path), signer=for_site(loaded)
        )
        try:
            with store._errors(f"record regression {record.regression_id}"), store._write() as conn:
                query = select(chain_head.c.seq, chain_head.c.hash)
                if conn.dialect.name == "postgresql":
                    query = query.with_for_update()
                head = conn.execute(query).one()
                seq, prev = chain.before_append(
                    conn, store.shown, head.seq, head.hash, store.signer
                )
                chain.append_event(conn, seq, prev, data, [store.signer] if store.signer else [])
        finally:
            store.close()
    except (EvidenceError, SigningError) as exc:
        return f"{exc}; kept in {spool(loaded, data)}"
    return None


def spool(loaded: LoadedSite, data: dict[str, Any]) -> Path:
    """Keep ``data`` where a person finds it: ``.restoredrill/spool/regressions/`` beside
    the site file, else the user's spool folder (``evidence import`` takes runs only)."""
    from . import spool as spooling

    name = f"{data['regression_id']}.json"
    problems = []
    for folder in (spooling.site_dir(loaded.path), spooling.user_dir()):
        try:
            return spooling._write_file(folder / "regressions" / name, chain.dumps(data) + "\n")
        except OSError as exc:
            problems.append(f"{folder}: {exc.strerror or exc}")
    raise EvidenceError(
        f"the regression {data['regression_id']} could not be kept: {'; '.join(problems)}"
    )


def regressions(
    store: EvidenceStore, limit: int = 20, system: str | None = None
) -> list[dict[str, Any]]:
    """Recorded regressions, newest first (those that ran ``system``, if given)."""
    with store._errors("read regressions"), store._read() as conn:
        if not chain._exists(conn, chain_events_t):
            return []
        rows = conn.execute(
            select(chain_events_t.c.seq, chain_events_t.c.body)
            .where(chain_events_t.c.kind == KIND)
            .order_by(chain_events_t.c.seq.desc())
        )
        out = []
        for row in rows:
            data = json.loads(row.body)
            ran = set(data["affected"].get("baseline", [])) | set(
                data["affected"].get("candidate", [])
            )
            if system is None or system in ran:
                out.append(data | {"seq": row.seq})
            if len(out) >= limit:
                break
        return out
