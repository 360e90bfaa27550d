"""Exported bundles: in-toto Statements in DSSE envelopes, checked by our verifier with no
database, and independently by OpenSSL's command line on the PAE bytes. Editing any one
byte of a bundle fails verification and names the line."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from evidence_data import a_run, fill, site_yaml
from pg import pg_server, pg_url  # noqa: F401 - fixtures

from restoredrill.flows import chain
from restoredrill.flows.attestation import (
    PAYLOAD_TYPE,
    STATEMENT,
    VERIFICATION_TYPE,
    BundleError,
    system_digest,
    verify_bundle,
)
from restoredrill.flows.evidence import EvidenceStore
from restoredrill.flows.export import ExportRefused, export
from restoredrill.flows.signing import SigningError, keygen, pae

NOW = datetime.now(UTC)
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'evidence.db'}"
    return request.getfixturevalue("pg_url")


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def statement(envelope: dict) -> dict:
    return json.loads(base64.b64decode(envelope["payload"]))


def test_export_verify_and_openssl(store_url: str, tmp_path: Path) -> None:
    signer = keygen(tmp_path / "site.key")
    with EvidenceStore(store_url, signer=signer) as store:
        fill(store, days=4, now=NOW)
        bundle = tmp_path / "plant.intoto.jsonl"
        done = export(store, bundle, signer, site="plant", since=NOW - timedelta(days=2, hours=1))
    assert (done.runs, done.attestations) == (2, 6)
    envelopes = lines(bundle)
    assert len(envelopes) == 7
    manifest = statement(envelopes[0])
    assert manifest["predicate"]["export_key"] == signer.keyid
    assert manifest["predicate"]["keys"][0]["public_key"] == signer.public.pem
    first = statement(envelopes[1])
    assert first["_type"] == STATEMENT and first["predicateType"] == VERIFICATION_TYPE
    predicate = first["predicate"]
    assert predicate["run"]["run_id"] == "run-002" and predicate["system"]["system"] == "historian"
    assert predicate["system"]["backup"]["sha256"] == "02" * 32
    assert [s["name"] for s in predicate["system"]["steps"]] == ["restore", "checks"]
    assert predicate["system"]["checks"][1]["expected"] == {"max": 60.0, "min": 40.0}
    assert (
        predicate["chain"]["seq"] == 4 and predicate["chain"]["signature"]["keyid"] == signer.keyid
    )
    assert first["subject"][0]["digest"]["sha256"] == system_digest(predicate["system"])
    assert first["subject"][1] == {
        "name": "image_archive:/backups/historian-2.tar#historian-2.tar",
        "digest": {"sha256": "02" * 32},
    }
    report = verify_bundle(bundle, signer.public)
    assert report.ok and (report.runs, report.attestations, report.chained) == (2, 6, 2), report
    # the same signatures, checked by OpenSSL alone: PAE bytes, raw ed25519 signature
    for i, envelope in enumerate(envelopes):
        payload = base64.b64decode(envelope["payload"])
        (tmp_path / f"pae-{i}").write_bytes(pae(envelope["payloadType"], payload))
        (tmp_path / f"sig-{i}").write_bytes(base64.b64decode(envelope["signatures"][0]["sig"]))
        assert envelope["payloadType"] == PAYLOAD_TYPE
        checked = subprocess.run(
            ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(tmp_path / "site.pub"),
             "-rawin", "-in", str(tmp_path / f"pae-{i}"), "-sigfile", str(tmp_path / f"sig-{i}")],
            capture_output=True, text=True,
        )  # fmt: skip
        assert checked.returncode == 0 and "Signature Verified Successfully" in checked.stdout
    (tmp_path / "pae-1").write_bytes((tmp_path / "pae-1").read_bytes().replace(b"52.5", b"52.6"))
    forged = subprocess.run(
        ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(tmp_path / "site.pub"), "-rawin",
         "-in", str(tmp_path / "pae-1"), "-sigfile", str(tmp_path / "sig-1")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert forged.returncode != 0


def _flips(data: bytes, at: int) -> list[bytes]:
    """Other values for byte ``at``: a neighbour, and for a base64 or hex character another
    character of its alphabet (so the line still decodes)."""
    ch = chr(data[at])
    out = {data[at] ^ 0x01}
    if ch in B64:
        out.add(ord(B64[(B64.index(ch) + 1) % 64]))
    if ch in "0123456789abcdef":
        out.add(ord("0123456789abcdef"[("0123456789abcdef".index(ch) + 1) % 16]))
    return [data[:at] + bytes([b]) + data[at + 1 :] for b in out if b != data[at]]


def test_every_byte_of_a_bundle_is_covered(tmp_path: Path) -> None:
    signer = keygen(tmp_path / "site.key")
    url = f"sqlite:///{tmp_path / 'evidence.db'}"
    with EvidenceStore(url, signer=signer) as store:
        store.record(a_run(1, NOW).model_copy(update={"systems": a_run(1, NOW).systems[:1]}))
        bundle = tmp_path / "one.jsonl"
        export(store, bundle, signer)
    data = bundle.read_bytes()
    assert verify_bundle(bundle, signer.public).ok
    edited = tmp_path / "edited.jsonl"
    line_of = [data[:i].count(b"\n") + 1 for i in range(len(data))]
    for at in range(len(data)):
        for variant in _flips(data, at):
            edited.write_bytes(variant)
            try:
                report = verify_bundle(edited, signer.public)
            except BundleError:
                continue  # not a bundle any more: refused outright
            assert not report.ok, f"byte {at} ({chr(data[at])!r}) changed, bundle still verifies"
            text = " ".join(report.problems)
            assert f"line {line_of[at]}" in text or "line " in text or "run " in text, text


def test_a_bundle_signed_by_another_key_is_refused(tmp_path: Path) -> None:
    signer, stranger = keygen(tmp_path / "site.key"), keygen(tmp_path / "stranger.key")
    url = f"sqlite:///{tmp_path / 'evidence.db'}"
    with EvidenceStore(url, signer=signer) as store:
        fill(store, days=2, now=NOW)
        with pytest.raises(SigningError, match="is not the chain's key"):
            export(store, tmp_path / "x.jsonl", stranger)
        export(store, tmp_path / "b.jsonl", signer)
    report = verify_bundle(tmp_path / "b.jsonl", stranger.public)
    assert not report.ok and "signed by another key" in report.problems[0]
    # a forger re-signs every envelope with his own key: still not the key the auditor trusts
    forged = []
    for envelope in lines(tmp_path / "b.jsonl"):
        payload = base64.b64decode(envelope["payload"])
        sig = stranger.sign(PAYLOAD_TYPE, payload)
        forged.append(
            {
                **envelope,
                "signatures": [{"keyid": stranger.keyid, "sig": base64.b64encode(sig).decode()}],
            }
        )
    (tmp_path / "f.jsonl").write_text(
        "".join(json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n" for e in forged)
    )
    report = verify_bundle(tmp_path / "f.jsonl", signer.public)
    assert not report.ok and any("signed by key" in p for p in report.problems), report.problems


def test_rotation_and_pruning_in_a_bundle(store_url: str, tmp_path: Path) -> None:
    from restoredrill.flows.retention import prune

    old, new = keygen(tmp_path / "old.key"), keygen(tmp_path / "new.key")
    with EvidenceStore(store_url, signer=old) as store:
        fill(store, days=5, now=NOW)
        with store._write() as conn:
            chain.rotate(conn, store.shown, old, new)
        store.signer = new
        store.record(a_run(0, NOW + timedelta(minutes=1), prefix="new"))
        prune(store, new, timedelta(days=3, hours=1))
        export(store, tmp_path / "b.jsonl", new)
    for trusted in (old, new):  # the auditor may have pinned the old key
        report = verify_bundle(tmp_path / "b.jsonl", trusted.public)
        assert report.ok and report.runs == 4 and report.chained == 4, report
        assert report.keys == [old.keyid, new.keyid]


def test_a_broken_chain_is_not_exported(tmp_path: Path) -> None:
    signer = keygen(tmp_path / "site.key")
    url = f"sqlite:///{tmp_path / 'evidence.db'}"
    with EvidenceStore(url, signer=signer) as store:
        fill(store, days=3, now=NOW)
    import sqlite3

    with sqlite3.connect(tmp_path / "evidence.db") as db:
        db.execute(
            "UPDATE check_results SET observed_json = '52.6' WHERE id = "
            "(SELECT min(id) FROM check_results WHERE observed_json = '52.5')"
        )
    with EvidenceStore(url) as store, pytest.raises(ExportRefused, match="run-003.*altered"):
        export(store, tmp_path / "b.jsonl", signer)
    assert not (tmp_path / "b.jsonl").exists()


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    base = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    base.pop("RESTOREDRILL_SIGNING_KEY", None)
    return subprocess.run([sys.executable, "-m", "restoredrill.flows.cli", *args],
                          capture_output=True, text=True, env=base | (env or {}), timeout=300)  # fmt: skip


def test_cli_export_and_verify(tmp_path: Path) -> None:
    signer = keygen(tmp_path / "site.key")
    url = f"sqlite:///{tmp_path / 'evidence.db'}"
    site = site_yaml(tmp_path, url, tmp_path / "site.key")
    with EvidenceStore(url, signer=signer) as store:
        fill(store, days=5, now=NOW)
    bundle = tmp_path / "b.jsonl"
    done = cli("evidence", "export", "--site", str(site), "--since", "2d1h", "-o", str(bundle))
    assert done.returncode == 0 and "exported 2 runs (6 attestations)" in done.stdout, done.stderr
    ok = cli("evidence", "verify", "--bundle", str(bundle), "--key", str(tmp_path / "site.pub"))
    assert ok.returncode == 0 and "bundle intact: 6 attestations of 2 runs" in ok.stdout, ok.stderr
    one = cli(
        "evidence",
        "export",
        "--site",
        str(site),
        "--run",
        "run-003",
        "-o",
        str(tmp_path / "r.jsonl"),
    )
    assert one.returncode == 0 and "exported 1 runs" in one.stdout, one.stderr
    data = bundle.read_bytes()
    at = data.index(b'"payload":"') + 40
    bundle.write_bytes(data[:at] + (b"B" if data[at : at + 1] != b"B" else b"C") + data[at + 1 :])
    bad = cli("evidence", "verify", "--bundle", str(bundle), "--key", str(tmp_path / "site.pub"))
    assert bad.returncode == 1 and "line 1" in bad.stderr and "altered" in bad.stderr, bad.stderr
    stranger = keygen(tmp_path / "stranger.key")
    other = cli(
        "evidence",
        "verify",
        "--bundle",
        str(tmp_path / "r.jsonl"),
        "--key",
        str(tmp_path / "stranger.pub"),
    )
    assert other.returncode == 1 and "signed by another key" in other.stderr
    assert stranger.keyid[:16] in other.stderr


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["--key", "{tmp}/nope.key"], {}, "nope.key (--key): cannot read it"),
        (["--key", "{tmp}/site.pub"], {}, "that is a public key"),
        ([], {"RESTOREDRILL_SIGNING_KEY": "{tmp}/garbage.key"}, "garbage.key"),
        ([], {}, "exporting needs the site's signing key"),
        (["--key", "{tmp}/other.key"], {}, "is not the chain's key"),
        (["--run", "r404", "--key", "{tmp}/site.key"], {}, "no run 'r404'"),
    ],
    ids=["missing", "public-not-private", "unreadable", "none", "wrong", "unknown-run"],
)
def test_cli_export_bad_input(tmp_path: Path, args: list[str], env: dict, words: str) -> None:
    signer = keygen(tmp_path / "site.key")
    keygen(tmp_path / "other.key")
    (tmp_path / "garbage.key").write_text("not a key\n")
    url = f"sqlite:///{tmp_path / 'evidence.db'}"
    with EvidenceStore(url, signer=signer) as store:
        fill(store, days=1, now=NOW)
    fill_in = [a.format(tmp=tmp_path) for a in args]
    done = cli("evidence", "export", "--evidence", url, "-o", str(tmp_path / "b.jsonl"), *fill_in,
               env={k: v.format(tmp=tmp_path) for k, v in env.items()})  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert words in " ".join(done.stderr.split()) and "Traceback" not in done.stderr


def test_cli_verify_bundle_bad_input(tmp_path: Path) -> None:
    keygen(tmp_path / "site.key")
    missing = cli(
        "evidence",
        "verify",
        "--bundle",
        str(tmp_path / "none.jsonl"),
        "--key",
        str(tmp_path / "site.pub"),
    )
    assert missing.returncode == 2 and "none.jsonl: cannot read it" in missing.stderr
    (tmp_path / "x.jsonl").write_text("hello\n")
    junk = cli(
        "evidence",
        "verify",
        "--bundle",
        str(tmp_path / "x.jsonl"),
        "--key",
        str(tmp_path / "site.pub"),
    )
    assert junk.returncode == 1 and "line 1: not JSON" in junk.stderr
    nokey = cli("evidence", "verify", "--bundle", str(tmp_path / "x.jsonl"))
    assert nokey.returncode == 2 and "--bundle needs --key" in nokey.stderr
