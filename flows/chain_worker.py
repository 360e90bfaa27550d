"""A helper process of ``evidence verify`` on a long chain (started by
flows/chain_rows.py): it opens the store, rebuilds the run hashes of the seq ranges it is
given and answers one line per range, in order."""

from __future__ import annotations

import json
import sys

from .chain_rows import hashes, runs_between
from .evidence import EvidenceStore


def main() -> int:
    """Read {"url", "ranges"} on stdin (never the command line: the URL may hold a
    password), answer {"lo", "hashes"} per range."""
    request = json.loads(sys.stdin.readline())
    store = EvidenceStore(request["url"], create=False)
    try:
        for lo, hi in request["ranges"]:
            with store._read() as conn:
                found = hashes(conn, runs_between(conn, lo, hi))
            sys.stdout.write(json.dumps({"lo": lo, "hashes": found}) + "\n")
            sys.stdout.flush()
    except BrokenPipeError:
        return 0
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
