"""JUnit XML of a run or a regression, as Jenkins, GitLab and GitHub Actions read it.

The shape is the one of the Jenkins xUnit plugin's JUnit schema (``junit-10.xsd``):
``<testsuites>`` of ``<testsuite tests= failures= errors= skipped= time= timestamp=>``,
each of ``<testcase classname= name= time=>`` with at most one ``<failure>``,
``<error>`` or ``<skipped>`` (``message`` and ``type`` attributes, details as text).
The counts are the numbers of test cases of each outcome; times are seconds.

- ``restoredrill run --junit FILE``: one suite per system, one test case per check
  (failed: ``failure``, could not be carried out: ``error``), and one for the system's
  recovery (``error`` when a step failed, ``failure`` past its RTO or RPO, ``skipped``
  when it was blocked).
- ``restoredrill regress --junit FILE``: one suite per system, one test case per check
  (a regression is a ``failure`` showing both runs' values) plus its verdict and
  recovery time, and a ``snapshots`` suite with one test case per snapshot difference
  (a ``failure``) or, for a snapshot without differences, one passing test case.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path
from typing import Any

from restoredrill.checks.base import Status

from .results import RunRecord, SystemResult, Verdict

_BAD_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def text(value: Any, limit: int = 4000) -> str:
    """Text XML 1.0 can hold: characters it forbids are written as ``\\xNN`` escapes."""
    s = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    s = _BAD_XML.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), s)
    return s if len(s) <= limit else s[: limit - 1] + "…"


class Suites:
    """A ``<testsuites>`` document built suite by suite."""

    def __init__(self, name: str) -> None:
        self.root = ET.Element("testsuites", name=text(name))

    def suite(self, name: str, timestamp: datetime | None = None, **props: Any) -> ET.Element:
        el = ET.SubElement(self.root, "testsuite", name=text(name), tests="0")
        if timestamp is not None:
            el.set("timestamp", timestamp.replace(tzinfo=None).isoformat(timespec="seconds"))
        if props:
            holder = ET.SubElement(el, "properties")
            for key, value in props.items():
                if value is not None:
                    ET.SubElement(holder, "property", name=key, value=text(value, 500))
        return el

    def case(
        self,
        suite: ET.Element,
        classname: str,
        name: str,
        seconds: float | None = None,
        outcome: str | None = None,
        message: str = "",
        kind: str = "",
        details: str = "",
    ) -> ET.Element:
        """A test case; ``outcome``: None (passed), ``failure``, ``error`` or ``skipped``."""
        el = ET.SubElement(suite, "testcase", classname=text(classname), name=text(name))
        el.set("time", f"{max(seconds or 0.0, 0.0):.3f}")
        if outcome is not None:
            child = ET.SubElement(el, outcome, message=text(message, 1000))
            if kind:
                child.set("type", text(kind, 100))
            if details:
                child.text = text(details, 20000)
        return el

    def write(self, path: Path) -> None:
        total = {"tests": 0, "failures": 0, "errors": 0}
        seconds = 0.0
        for suite in self.root.findall("testsuite"):
            cases = suite.findall("testcase")
            counts = {
                "tests": len(cases),
                "failures": sum(c.find("failure") is not None for c in cases),
                "errors": sum(c.find("error") is not None for c in cases),
                "skipped": sum(c.find("skipped") is not None for c in cases),
            }
            time = sum(float(c.get("time", "0")) for c in cases)
            for key, value in counts.items():
                suite.set(key, str(value))
                if key in total:
                    total[key] += value
            suite.set("time", f"{time:.3f}")
            seconds += time
        for key, value in total.items():
            self.root.set(key, str(value))
        self.root.set("time", f"{seconds:.3f}")
        ET.indent(self.root)
        path.parent.mkdir(parents=True, exist_ok=True)
        ET.ElementTree(self.root).write(path, encoding="UTF-8", xml_declaration=True)


# --------------------------------------------------------------------------- a run


def for_run(record: RunRecord) -> Suites:
    doc = Suites(f"restoredrill run {record.site} {record.run_id}")
    for s in record.systems:
        suite = doc.suite(
            f"{record.site}.{s.system}", s.started_at or record.started_at,
            run=record.run_id, verdict=s.verdict.value, reason=s.reason or None,
            backup=s.backup.backup_id if s.backup else None,
        )  # fmt: skip
        cls = f"{record.site}.{s.system}"
        for c in s.checks:
            outcome = {Status.PASS: None, Status.FAIL: "failure", Status.ERROR: "error"}[c.status]
            doc.case(
                suite, cls, c.name, c.duration_s, outcome,
                message=c.message or f"expected {text(c.expected, 200)}, observed {text(c.observed, 200)}",
                kind=c.kind, details=_values(c.expected, c.observed, c.message),
            )  # fmt: skip
        _recovery_case(doc, suite, cls, s)
    return doc


def _values(expected: Any, observed: Any, message: str = "") -> str:
    lines = [f"expected: {text(expected)}", f"observed: {text(observed)}"]
    return "\n".join(lines + ([message] if message else []))


def _recovery_case(doc: Suites, suite: ET.Element, cls: str, s: SystemResult) -> None:
    name = "recovery within RTO"
    outcome: str | None = None
    if s.verdict is Verdict.BLOCKED:
        outcome = "skipped"
    elif s.verdict is Verdict.ERROR:
        outcome = "error"
    elif s.verdict in (Verdict.RTO_EXCEEDED, Verdict.RPO_EXCEEDED):
        outcome = "failure"
    seconds = s.recovery_time_s
    details = f"recovery {seconds}s, RTO {s.rto_s}s; backup age {s.backup_age_s}s, RPO {s.rpo_s}s"
    doc.case(suite, cls, name, seconds, outcome, s.reason, s.verdict.value, details)


# --------------------------------------------------------------------------- a regression


def for_regression(record: Any) -> Suites:
    """``record``: a :class:`flows.regress.RegressionRecord`."""
    c = record.comparison
    site = record.site
    doc = Suites(f"restoredrill regress {site} {record.regression_id}")
    started = record.started_at
    props = {"regression": record.regression_id, "verdict": record.verdict}
    props |= {f"revision {k}": v for k, v in record.revisions.items()}
    by_system: dict[str, ET.Element] = {}
    for delta in c.systems:
        suite = doc.suite(f"{site}.{delta.system}", started, **props, baseline=delta.baseline,
                          candidate=delta.candidate)  # fmt: skip
        by_system[delta.system] = suite
        cls = f"{site}.{delta.system}"
        outcome = "failure" if delta.regression else None
        why = "; ".join(delta.reasons)
        doc.case(suite, cls, "verdict and recovery time", delta.candidate_s, outcome, why,
                 "system", f"baseline: {delta.baseline} in {delta.baseline_s}s\n"
                 f"candidate: {delta.candidate} in {delta.candidate_s}s\n{why}")  # fmt: skip
    for d in c.checks:
        suite = by_system.get(d.system) or doc.suite(f"{site}.{d.system}", started, **props)
        by_system[d.system] = suite
        outcome = "failure" if d.regression else None
        b, k = d.baseline, d.candidate
        message = f"{d.change}: baseline {_side(b)}; candidate {_side(k)}"
        shown = k if k is not None and k.expected is not None else b
        expected = f"expected: {text(shown.expected)}\n" if shown is not None else ""
        details = f"change: {d.change}\n{expected}baseline: {_side(b)}\ncandidate: {_side(k)}"
        doc.case(suite, f"{site}.{d.system}", d.check, None, outcome, message, d.change, details)
    snaps = doc.suite(f"{site}.snapshots", started, **props)
    differing = {e.snapshot for e in c.entries}
    for e in c.entries:
        outcome = "failure" if e.regression else None
        message = f"{e.change} ({e.what}): baseline {text(e.baseline, 200)}; candidate {text(e.candidate, 200)}"
        if e.detail:
            message += f" — {e.detail}"
        doc.case(snaps, f"{site}.snapshot.{e.snapshot}", f"{e.key}: {e.what}", None, outcome,
                 message, e.change, f"endpoint: {e.endpoint}\n{message}")  # fmt: skip
    for name in c.snapshots:
        if name not in differing:
            doc.case(snaps, f"{site}.snapshot.{name}", "no differences", None)
    return doc


def _side(side: Any) -> str:
    if side is None:
        return "absent"
    observed = side.observed if side.observed is not None else side.message
    return f"{side.status}, observed {text(observed, 300)}"
