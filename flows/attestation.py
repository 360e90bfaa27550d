"""Exported evidence: in-toto Statements in DSSE envelopes, verified offline.

``restoredrill evidence export`` writes a bundle: JSON Lines, one DSSE envelope per line
(compact JSON, sorted keys, the same as in-toto's attestation bundles ``*.intoto.jsonl``):

1. the manifest: a Statement (predicate type :data:`EXPORT_TYPE`) whose subjects are
   the SHA-256 of every other envelope's payload, with the site, the selection, the
   chain head, the keys (with their announcements, signed by their predecessors) and
   the key that signed the bundle;
2. one Statement per system verification (predicate type :data:`VERIFICATION_TYPE`):
   subject ``restoredrill:SITE/RUN/SYSTEM`` with the SHA-256 of the system's record and,
   when known, the backup with its SHA-256; predicate ``{"site", "run", "system",
   "chain"}``: the run's own fields, the system's whole record as the chain hashes it
   (backup identity and digest, steps and timings, checks with expected and observed,
   verdict), and its place in the chain (seq, prev_hash, hash, the signature made when
   the run was recorded).

Every byte is covered: each envelope's signature covers its payload and payload type
(DSSE PAE), the manifest binds the envelopes' payloads and the keys, and a line must be
exactly the compact form of what it holds. :func:`verify_bundle` checks all that, and
rebuilds each complete run's chain hash and its record-time signature, with no database.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from restoredrill.errors import InputError

from .canonical import canonical_json, legacy_mismatch, normalized, unsure
from .chain import LINK_TYPE, event_hash, link_payload, succession
from .results import RunRecord, SystemResult
from .signing import PublicKey, Signer, SigningError, b64, unb64

STATEMENT = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
VERIFICATION_TYPE = "https://restoredrill.invalid/attestation/restore-verification/v1"
EXPORT_TYPE = "https://restoredrill.invalid/attestation/evidence-export/v1"


class BundleError(InputError):
    """A bundle cannot be read at all (missing, not a bundle); exit code 2."""


def canonical(data: Any) -> bytes:
    """Sorted keys, no spaces, ASCII: the bytes of a payload and of a bundle line."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def system_digest(system: dict[str, Any]) -> str:
    """The SHA-256 a statement's first subject gives for its system's record."""
    return sha256(canonical(system))


def envelope(payload: bytes, signer: Signer) -> dict[str, Any]:
    sig = signer.sign(PAYLOAD_TYPE, payload)
    return {
        "payload": b64(payload),
        "payloadType": PAYLOAD_TYPE,
        "signatures": [{"keyid": signer.keyid, "sig": b64(sig)}],
    }


# --------------------------------------------------------------------------- writing


@dataclass
class Link:
    """A run's place in the chain, as the store holds it."""

    seq: int
    prev_hash: str
    hash: str
    signature: dict[str, str] | None


def statements(record: RunRecord, link: Link) -> list[dict[str, Any]]:
    """One Statement per system of ``record`` (as the chain hashes it)."""
    data = normalized(record).model_dump(mode="json")
    systems = data.pop("systems")
    run = data | {"systems": [s["system"] for s in systems]}
    out = []
    for position, system in enumerate(systems):
        subjects = [
            {
                "name": f"restoredrill:{record.site}/{record.run_id}/{system['system']}",
                "digest": {"sha256": system_digest(system)},
            }
        ]
        backup = system.get("backup")
        if backup and backup.get("sha256"):
            subjects.append(
                {
                    "name": f"{backup['source']}:{backup['location']}#{backup['backup_id']}",
                    "digest": {"sha256": backup["sha256"]},
                }
            )
        out.append(
            {
                "_type": STATEMENT,
                "subject": subjects,
                "predicateType": VERIFICATION_TYPE,
                "predicate": {
                    "site": record.site,
                    "run": run,
                    "system": system,
                    "chain": {
                        "seq": link.seq,
                        "prev_hash": link.prev_hash,
                        "hash": link.hash,
                        "position": position,
                        "signature": link.signature,
                    },
                },
            }
        )
    return out


def write_bundle(
    path: Path,
    items: Iterable[tuple[RunRecord, Link]],
    signer: Signer,
    *,
    manifest: dict[str, Any],
) -> tuple[int, int]:
    """Write the bundle (manifest first); return (runs, attestations)."""
    lines: list[bytes] = []
    subjects = []
    runs = 0
    for record, link in items:
        runs += 1
        for statement in statements(record, link):
            payload = canonical(statement)
            subjects.append(
                {"name": f"attestation/{len(lines) + 1}", "digest": {"sha256": sha256(payload)}}
            )
            lines.append(canonical(envelope(payload, signer)))
    head = {
        "_type": STATEMENT,
        "subject": subjects or [{"name": "attestation/none", "digest": {"sha256": sha256(b"")}}],
        "predicateType": EXPORT_TYPE,
        "predicate": manifest
        | {
            "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "export_key": signer.keyid,
            "runs": runs,
            "attestations": len(lines),
        },
    }
    data = b"".join(line + b"\n" for line in [canonical(envelope(canonical(head), signer)), *lines])
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_bytes(data)
        temporary.replace(path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise BundleError(f"cannot write {path}: {exc.strerror or exc}") from None
    return runs, len(lines)


# --------------------------------------------------------------------------- verifying


@dataclass
class BundleReport:
    """What :func:`verify_bundle` found."""

    ok: bool
    problems: list[str] = field(default_factory=list)
    site: str | None = None
    runs: int = 0
    attestations: int = 0
    chained: int = 0
    """Runs whose chain hash and record-time signature were rebuilt from the bundle."""
    export_key: str | None = None
    keys: list[str] = field(default_factory=list)
    keys_found: dict[str, PublicKey] = field(default_factory=dict, repr=False)


@dataclass
class _Envelope:
    line: int
    payload: bytes
    statement: dict[str, Any]
    keyid: str
    sig: bytes


def _read_lines(path: Path) -> list[bytes]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if not data:
        raise BundleError(f"{path}: empty: not an evidence bundle")
    if not data.endswith(b"\n"):
        return data.split(b"\n") + [b"<no final newline>"]
    return data[:-1].split(b"\n")


def _parse(number: int, line: bytes) -> tuple[_Envelope | None, str | None]:
    where = f"line {number}"
    try:
        env = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"{where}: not JSON ({exc})"
    if (
        not isinstance(env, dict)
        or set(env) != {"payload", "payloadType", "signatures"}
        or not isinstance(env["signatures"], list)
        or len(env["signatures"]) != 1
        or not isinstance(env["signatures"][0], dict)
        or set(env["signatures"][0]) != {"keyid", "sig"}
    ):
        return None, f"{where}: not a DSSE envelope with one signature"
    if canonical(env) != line:
        return None, f"{where}: altered (not the form it was written in)"
    if env["payloadType"] != PAYLOAD_TYPE:
        return None, f"{where}: payload type {env['payloadType']!r} is not {PAYLOAD_TYPE}"
    try:
        payload = unb64(env["payload"])
        sig = unb64(env["signatures"][0]["sig"])
        statement = json.loads(payload)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        return None, f"{where}: altered: its payload or signature cannot be decoded ({exc})"
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT:
        return None, f"{where}: its payload is not an in-toto Statement"
    return _Envelope(number, payload, statement, str(env["signatures"][0]["keyid"]), sig), None


_SHAPE = (KeyError, TypeError, ValueError, AttributeError, IndexError)
"""What reading an altered structure raises (a bundle is input: any shape may come)."""


def verify_bundle(path: Path, trusted: PublicKey) -> BundleReport:
    """Check a bundle offline against the key the auditor trusts (any key of the chain's
    succession: each announced key is signed by the one before it)."""
    lines = _read_lines(path)
    report = BundleReport(ok=False)
    envelopes: list[_Envelope] = []
    for number, line in enumerate(lines, 1):
        env, problem = _parse(number, line)
        if problem:
            report.problems.append(problem)
        elif env is not None:
            envelopes.append(env)
    if not envelopes or envelopes[0].line != 1:
        if not report.problems:
            report.problems.append("line 1: no manifest")
        return report
    head = envelopes[0]
    if head.statement.get("predicateType") != EXPORT_TYPE:
        report.problems.append("line 1: not a restoredrill evidence export manifest")
        return report
    try:
        export_key = _trust(head, trusted, report)
    except _SHAPE as exc:
        report.problems.append(
            f"line 1: altered: the manifest is not in the form written ({_why(exc)})"
        )
        return report
    if export_key is None:
        return report
    subjects = head.statement.get("subject")
    body = envelopes[1:]
    if report.problems:
        return report  # the manifest itself is altered: nothing it lists can be trusted
    manifest = head.statement["predicate"]
    if manifest.get("attestations") != len(lines) - 1:
        report.problems.append(
            f"the manifest lists {manifest.get('attestations')} attestations, the file holds "
            f"{len(lines) - 1}: lines were added or removed"
        )
    for env in body:
        try:
            _check_envelope(env, subjects, export_key, report.problems)
        except _SHAPE as exc:
            report.problems.append(
                f"line {env.line}: altered: not in the form written ({_why(exc)})"
            )
    report.attestations = len(body)
    _check_runs(body, report.keys_found, manifest, report)
    report.ok = not report.problems
    return report


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:80]}"


def _trust(head: _Envelope, trusted: PublicKey, report: BundleReport) -> PublicKey | None:
    """The key that signed the bundle, if the auditor's key vouches for it and the
    manifest's signature holds."""
    manifest = head.statement["predicate"]
    if not isinstance(manifest, dict):
        raise TypeError("the predicate is not an object")
    report.site = manifest.get("site")
    keys = _keys(manifest, report.problems)
    report.keys = list(keys)
    report.keys_found = keys
    export_id = str(manifest.get("export_key"))
    report.export_key = export_id
    export_key = keys.get(export_id)
    if export_key is None:
        report.problems.append(
            f"line 1: the bundle's signing key {export_id[:16]} is not among its keys"
        )
        return None
    if trusted.keyid not in keys:
        report.problems.append(
            f"signed by another key: this bundle is signed by {export_id[:16]} (keys of its "
            f"chain: {', '.join(k[:16] for k in keys)}), not by the key you trust, "
            f"{trusted.keyid[:16]}"
        )
        return None
    _check_signature(head, export_key, "the manifest", report.problems)
    _check_checkpoint(manifest, keys, report.problems)
    return export_key


def _check_envelope(
    env: _Envelope, subjects: list[dict[str, Any]], key: PublicKey, problems: list[str]
) -> None:
    index = env.line - 1
    want = subjects[index - 1]["digest"]["sha256"] if 0 < index <= len(subjects) else None
    name = _name(env)
    if want != sha256(env.payload):
        problems.append(
            f"line {env.line} ({name}): altered: not the attestation the manifest lists"
        )
        return
    if _check_signature(env, key, name, problems):
        _check_statement(env, name, problems)


def _name(env: _Envelope) -> str:
    try:
        predicate = env.statement["predicate"]
        run, system = predicate["run"]["run_id"], predicate["system"]["system"]
    except _SHAPE:
        return "attestation"
    return f"run {run}, system {system}"


def _check_signature(env: _Envelope, key: PublicKey, name: str, problems: list[str]) -> bool:
    if env.keyid != key.keyid:
        problems.append(
            f"line {env.line} ({name}): signed by key {env.keyid[:16]}, not the bundle's {key.keyid[:16]}"
        )
        return False
    if not key.verify(PAYLOAD_TYPE, env.payload, env.sig):
        problems.append(f"line {env.line} ({name}): altered: its signature does not match")
        return False
    return True


def _check_statement(env: _Envelope, name: str, problems: list[str]) -> None:
    statement = env.statement
    predicate = statement.get("predicate") or {}
    subject = (statement.get("subject") or [{}])[0]
    if statement.get("predicateType") != VERIFICATION_TYPE:
        problems.append(f"line {env.line}: not a restore verification")
    elif subject.get("digest", {}).get("sha256") != system_digest(predicate.get("system") or {}):
        problems.append(f"line {env.line} ({name}): its subject's digest does not match its record")


def _keys(manifest: dict[str, Any], problems: list[str]) -> dict[str, PublicKey]:
    """The chain's keys, each announcement checked: signed by the key it announces and by
    the key before it. Announcements of runs pruned are kept by the checkpoint."""
    keys: dict[str, PublicKey] = {}
    previous: PublicKey | None = None
    announced = _cut(manifest).get("announcements") or []
    for keyid in succession(announced):
        body = next(b for b in map(_body, announced) if b.get("keyid") == keyid)
        keys[keyid] = previous = PublicKey.from_pem(body["public_key"])
    for entry in manifest.get("keys") or []:
        if entry.get("keyid") in keys:
            continue  # the key in effect where the chain was cut: from the checkpoint
        try:
            key = PublicKey.from_pem(entry["public_key"])
        except (SigningError, KeyError, TypeError):
            problems.append("line 1: a key of the manifest cannot be read")
            continue
        if key.keyid != entry.get("keyid"):
            problems.append(
                f"line 1: key {str(entry.get('keyid'))[:16]} does not match its public key"
            )
            continue
        announcement = entry.get("announcement")
        if announcement is None:
            if keys or not (manifest.get("unsigned_chain") or _checkpointed(manifest, key)):
                problems.append(f"line 1: key {key.keyid[:16]} has no announcement in the chain")
                continue
        elif not _announced(announcement, key, previous, problems):
            continue
        keys[key.keyid] = previous = key
    return keys


def _cut(manifest: dict[str, Any]) -> dict[str, Any]:
    return _body(manifest.get("checkpoint") or {})


def _body(event: dict[str, Any]) -> dict[str, Any]:
    try:
        body = json.loads(event.get("body") or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _announced(
    event: dict[str, Any], key: PublicKey, previous: PublicKey | None, problems: list[str]
) -> bool:
    where = f"line 1: announcement of key {key.keyid[:16]}"
    try:
        body = json.loads(event["body"])
        ok_hash = event_hash(str(event["prev_hash"]), event["body"]) == event["hash"]
        sigs = dict(event["signatures"])
        payload = link_payload(
            "key", int(event["seq"]), str(event["prev_hash"]), str(event["hash"])
        )
    except _SHAPE:
        problems.append(f"{where}: altered (incomplete)")
        return False
    if not ok_hash or body.get("keyid") != key.keyid or body.get("kind") != "key":
        problems.append(f"{where}: altered")
        return False
    signers = [key] + ([previous] if previous is not None else [])
    for signer in signers:
        sig = sigs.get(signer.keyid)
        if not isinstance(sig, str) or not _valid(signer, payload, sig):
            problems.append(f"{where}: not signed by {signer.keyid[:16]}")
            return False
    return True


def _checkpointed(manifest: dict[str, Any], key: PublicKey) -> bool:
    """The first key may stand on the checkpoint (its announcement pruned); the
    checkpoint's own signature is checked by :func:`_check_checkpoint`."""
    return (_cut(manifest).get("key_at_cut") or {}).get("keyid") == key.keyid


def _check_checkpoint(
    manifest: dict[str, Any], keys: dict[str, PublicKey], problems: list[str]
) -> None:
    """A checkpoint in the manifest (runs pruned) must be intact and signed by the key in
    effect where it stands in the chain."""
    event = manifest.get("checkpoint")
    if not event:
        return
    try:
        seq, prev, digest = int(event["seq"]), event["prev_hash"], event["hash"]
        intact = event_hash(prev, event["body"]) == digest
        sigs = dict(event["signatures"])
    except (KeyError, TypeError, ValueError):
        problems.append("line 1: the checkpoint is incomplete")
        return
    key = _key_at(_key_seqs(manifest), keys, seq)
    payload = link_payload("checkpoint", seq, prev, digest)
    if not intact or key is None or not _valid(key, payload, sigs.get(key.keyid, "")):
        problems.append(f"line 1: the checkpoint #{seq} (runs pruned) is altered or not signed")


def _valid(key: PublicKey, payload: bytes, sig: str) -> bool:
    try:
        return key.verify(LINK_TYPE, payload, unb64(sig))
    except _SHAPE:
        return False


def _check_runs(
    body: Sequence[_Envelope],
    keys: dict[str, PublicKey],
    manifest: dict[str, Any],
    report: BundleReport,
) -> None:
    """Rebuild each complete run's chain hash and check the signature made when it was
    recorded, with the key in effect at its seq."""
    runs: dict[str, list[_Envelope]] = {}
    for env in body:
        try:
            run = str(env.statement["predicate"]["run"]["run_id"])
        except _SHAPE:
            run = f"of line {env.line}"
        runs.setdefault(run, []).append(env)
    report.runs = len(runs)
    try:
        since = _key_seqs(manifest)
    except _SHAPE as exc:
        report.problems.append(
            f"line 1: altered: its keys are not in the form written ({_why(exc)})"
        )
        return
    for run_id, envs in runs.items():
        try:
            problem = _check_run(envs, keys, since)
        except _SHAPE as exc:
            problem = f"altered: its attestations are not in the form written ({_why(exc)})"
        if problem:
            report.problems.append(f"run {run_id} (line {envs[0].line}): {problem}")
        else:
            report.chained += 1


def _check_run(
    envs: list[_Envelope], keys: dict[str, PublicKey], since: list[tuple[int, str]]
) -> str:
    """'' if the run's attestations rebuild its chain hash and its record-time signature."""
    predicate = envs[0].statement["predicate"]
    chain, run = predicate["chain"], predicate["run"]
    names = run["systems"]
    by_position = {e.statement["predicate"]["chain"]["position"]: e for e in envs}
    if sorted(by_position) != list(range(len(names))):
        return f"not all of its {len(names)} systems are in the bundle"
    systems = [by_position[i].statement["predicate"]["system"] for i in range(len(names))]
    if any(_place(e) != _place(envs[0]) or e.statement["predicate"]["run"] != run for e in envs):
        return "its attestations disagree on the run or its place in the chain"
    problem = _rehash(run, systems, chain)
    if problem:
        return f"#{chain['seq']}: {problem}"
    key = _key_at(since, keys, int(chain["seq"]))
    if key is None:
        return ""  # recorded before the chain was signed
    sig = chain["signature"] or {}
    payload = link_payload("run", int(chain["seq"]), str(chain["prev_hash"]), str(chain["hash"]))
    if sig.get("keyid") != key.keyid or not _valid(key, payload, str(sig.get("sig", ""))):
        return f"#{chain['seq']}: its record-time signature by key {key.keyid[:16]} is missing or does not match"
    return ""


def _place(env: _Envelope) -> dict[str, Any]:
    """A statement's place in the chain, without its position in the run."""
    return {k: v for k, v in env.statement["predicate"]["chain"].items() if k != "position"}


def _rehash(run: dict[str, Any], systems: list[dict[str, Any]], chain: dict[str, Any]) -> str:
    data = {k: v for k, v in run.items() if k != "systems"} | {"systems": systems}
    try:
        record = RunRecord.model_validate(data)
    except ValueError as exc:
        return f"its record cannot be read ({str(exc).splitlines()[0]})"
    prev, want = str(chain.get("prev_hash")), str(chain.get("hash"))
    if sha256((prev + canonical_json(record)).encode("utf-8")) == want:
        return ""
    for system in record.systems:  # a record of 0.1: whole numbers may have lost their type
        for check in system.checks:
            check.expected, check.observed = unsure(check.expected), unsure(check.observed)
    if legacy_mismatch(prev, record, want) is None:
        return ""
    return "its record no longer gives its chain hash: altered"


def _key_seqs(manifest: dict[str, Any]) -> list[tuple[int, str]]:
    """(seq from which it signs, keyid) for each key, oldest first."""
    out = []
    for entry in manifest.get("keys") or []:
        announcement = entry.get("announcement")
        if announcement:
            out.append((int(announcement.get("seq", 0)), entry.get("keyid")))
        else:
            out.append((int(_cut(manifest).get("cut_seq", 0)), entry.get("keyid")))
    return out


def _key_at(since: list[tuple[int, str]], keys: dict[str, PublicKey], seq: int) -> PublicKey | None:
    found = None
    for start, keyid in since:
        if start < seq:
            found = keys.get(keyid)
    return found


def system_result(statement: dict[str, Any]) -> SystemResult:
    """The system's record held by a verification statement."""
    return SystemResult.model_validate(statement["predicate"]["system"])
