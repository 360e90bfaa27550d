"""A real PostgreSQL for tests: ``$RESTOREDRILL_TEST_PG_URL``, or a throwaway local cluster.

Use it from a test module with ``from pg import pg_server, pg_url  # noqa: F401``.
``pg_server`` (session) is an admin URL; ``pg_url`` (per test) is a fresh, empty
database on it, dropped afterwards. With CI=true a missing PostgreSQL fails.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import missing

ENV = "RESTOREDRILL_TEST_PG_URL"


def _bindir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    return Path(dirs[-1]) if dirs and Path(dirs[-1], "initdb").exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _connect(url: str, deadline: float) -> None:
    """Wait until the server accepts connections (or the deadline passes)."""
    import psycopg

    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A libpq URL of a PostgreSQL server whose user may create databases."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing("psycopg 3 (pip install restoredrill[test])")
    if os.environ.get(ENV):
        yield os.environ[ENV].replace("postgresql+psycopg://", "postgresql://", 1)
        return
    bindir = _bindir()
    if bindir is None:
        missing(f"PostgreSQL (initdb not found; or set ${ENV})")
    root = Path(tempfile.mkdtemp(prefix="restoredrill-pg-"))
    data = root / "data"
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(root, "postgres", "postgres")
    port = _free_port()
    log = (root / "server.log").open("w")
    server = None
    try:
        subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
             "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        server = subprocess.Popen(
            [*prefix, str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1",
             "-p", str(port), "-k", str(root), "-c", "fsync=off", "-c", "max_connections=50"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        _connect(url, time.monotonic() + 60)
        yield url
    except (subprocess.CalledProcessError, OSError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        missing(f"a local PostgreSQL cluster (could not start it: {detail.strip()[:300]})")
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty database on the test server, dropped after the test."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = "restoredrill_test_" + secrets.token_hex(4)
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(pg_server)
    params["dbname"] = name
    user = quote(params.get("user", ""), safe="")
    password = f":{quote(params['password'], safe='')}" if params.get("password") else ""
    host, port = params.get("host", "127.0.0.1"), params.get("port", "5432")
    yield f"postgresql://{user}{password}@{host}:{port}/{name}"
    with psycopg.connect(make_conninfo(pg_server), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
