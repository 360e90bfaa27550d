"""Site files for the tests: ``host`` for addresses in a sandbox subnet; for the inventory's
tests a good site, and bad inputs with the one problem each must be reported as.

Their sandbox subnet, 10.249.77.0/24, is a paper one: no test creates a network there,
so what the host's Docker bridges hold cannot change these tests' outcome.
"""

from __future__ import annotations

import ipaddress


def host(subnet: str, n: int) -> str:
    """The ``n``-th address of ``subnet`` (10 → 10.240.3.10 in 10.240.3.0/24)."""
    return str(ipaddress.ip_network(subnet).network_address + n)


GOOD = """\
site: plant
sandbox:
  subnets: [10.249.77.0/24]
systems:
  - name: historian
    labels: {zone: ot, role: historian}
    backup: {kind: image_archive, path: backups/h.tar}
    run: {address: 10.249.77.10}
    ready: {kind: tcp, port: 8080}
    checks:
      - {kind: tcp, port: 8080}
    rto: 15m
    rpo: 1d
  - name: mes
    backup: {kind: image_archive, path: backups/m.tar}
    depends_on: [historian]
    rto: 1h30m
"""

# --- hostile and mistyped files: a clear error naming file and line, never a traceback -----

BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)
THIRD = "  - name: historian\n    backup: {kind: image_archive, path: backups/x.tar}\n    rto: 1m\n"

# (name, file bytes, the one problem expected, with {path} for the site file)
BAD_INPUTS = [
    (
        "duplicate-system-name",
        (GOOD + THIRD).encode(),
        '{path}:18: systems[2].name: "historian" is already the name of systems[0] (line 5); '
        "names must be unique",
    ),
    (
        "not-utf8",
        GOOD.replace("role: historian", "role: hist\xf3rian").encode("latin-1"),
        "{path}:6: not UTF-8 text (byte 0xf3 at column 34)",
    ),
    (
        "alias-bomb",
        (BOMB + GOOD).encode(),
        "{path}:7: g[0]: too many nodes: aliases expand the file past 1,000,000 values",
    ),
    (
        "huge-duration",
        GOOD.replace("rto: 1h30m", "rto: 99999999999999999999999999h").encode(),
        '{path}:17: systems[1].rto: "99999999999999999999999999h" is too long a duration '
        "(at most 36500d, 100 years)",
    ),
    (
        "pathological-duration",
        GOOD.replace("rto: 1h30m", f"rto: {'9' * 40_000}h").encode(),
        '{path}:17: systems[1].rto: "999999999999999999999999999999… (40,001 characters)" '
        "is not a duration (use 15m, 90s, 1h30m)",
    ),
    (
        "duplicate-key",
        GOOD.replace("    rpo: 1d\n", "    rpo: 1d\n    rto: 20m\n").encode(),
        "{path}:14: systems[0].rto: duplicate key (first given on line 12)",
    ),
]
