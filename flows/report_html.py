"""The readiness report as one self-contained HTML file, as JSON, or as PDF.

The HTML (Jinja2, ``templates/report.html.j2``) holds its style and its charts (inline
SVG, flows/charts.py); it has no script and names no URL, and its Content-Security-Policy
forbids any load, so it opens offline anywhere.

PDF is printed from the same HTML by headless Chromium (Debian's ``chromium``), not
WeasyPrint: the PDF is then exactly what a browser shows (the same engine the tests
screenshot), Chromium comes from the distribution's packages with no Python library
or native build to add, and it runs offline here with every network path closed
(no proxy reachable, every host name unresolvable, no background services).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from restoredrill.durations import format_duration
from restoredrill.errors import ExitCode, RestoredrillError

from .charts import Sample, line_chart
from .readiness import WINDOWS, Readiness, SystemReadiness


class ReportError(RestoredrillError):
    """The report cannot be written (PDF renderer missing or failing, file not writable):
    exit 2, as for a file that cannot be read."""

    exit_code = ExitCode.BAD_INPUT


def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("restoredrill.flows", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["dur"] = format_duration
    env.filters["when"] = lambda t: (
        t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if t else "never"
    )
    env.filters["day"] = lambda t: t.astimezone(UTC).strftime("%Y-%m-%d")
    env.filters["ratio"] = lambda v: "-" if v is None else f"{v * 100:.1f}%"
    env.filters["pct"] = lambda n, d: "-" if not d else f"{n * 100 / d:.1f}%"
    env.filters["days"] = lambda v: "-" if v is None else f"{v:.1f} d"
    env.filters["js"] = lambda v: json.dumps(v, ensure_ascii=False)[:300]
    return env


def html(report: Readiness) -> str:
    """The report as one HTML document."""
    charts = {
        s.name: (
            line_chart(
                "recovery time vs RTO",
                [Sample(p.at, p.recovery_s, p.verdict == "pass") for p in s.points],
                s.rto_s or (s.last.rto_s if s.last else None),
                report.start,
                report.end,
                target_label="RTO",
            ),
            line_chart(
                "backup age vs RPO",
                [Sample(p.at, p.backup_age_s, p.verdict != "rpo_exceeded") for p in s.points],
                s.rpo_s or (s.last.rpo_s if s.last else None),
                report.start,
                report.end,
                target_label="RPO",
            ),
        )
        for s in report.systems
        if s.points
    }
    last = report.last_run
    site_chart = line_chart(
        "site recovery time (critical path) vs site RTO",
        [Sample(run.at, run.recovery_s, run.verdict == "pass") for run in report.runs],
        last.rto_s if last else None,
        report.start,
        report.end,
        target_label="site RTO",
    )
    return (
        _env()
        .get_template("report.html.j2")
        .render(
            r=report,
            charts=charts,
            site_chart=site_chart,
            windows=WINDOWS,
            generated=datetime.now(UTC),
        )
    )


def as_json(report: Readiness) -> dict[str, Any]:
    """The report's figures as plain data (``--format json``)."""
    return {
        "site": report.site,
        "period": {"start": report.start.isoformat(), "end": report.end.isoformat()},
        "store": report.store,
        "summary": _summary(report),
        "chain": _chain(report),
        "compliance": [
            {
                "framework": c.control.framework,
                "control": c.control.id,
                "title": c.control.title,
                "rule": c.control.rule,
                "evidenced": {e.system: e.runs for e in c.evidenced},
                "lacking": c.lacking,
                "runs": c.runs,
            }
            for c in report.compliance
        ],
        "systems": [_system(s) for s in report.systems],
    }


def _summary(report: Readiness) -> dict[str, Any]:
    last = report.last_run
    return {
        "inventory": len(report.inventory),
        "proven_within_days": {str(d): report.proven_within(d) for d in WINDOWS},
        "covered": report.covered,
        "tested": report.tested,
        "coverage": report.covered / len(report.inventory) if report.inventory else None,
        "runs": len(report.runs),
        "verifications": report.verifications,
        "pass_rate": report.pass_rate,
        "rto_compliance": report.rto_compliance,
        "site_recovery_s": last.recovery_s if last else None,
        "site_rto_s": last.rto_s if last else None,
        "zones": report.zones(),
    }


def _chain(report: Readiness) -> dict[str, Any] | None:
    chain = report.chain
    if chain is None:
        return None
    return {
        "ok": chain.ok,
        "problem": chain.problem,
        "runs": chain.runs,
        "head": chain.head,
        "keyid": chain.keyid,
        "fingerprint": report.key_fingerprint,
        "signed": chain.signed,
        "unsigned": chain.unsigned,
        "pruned": chain.pruned,
        "records_checked_from": report.content_from_run,
    }


def _system(s: SystemReadiness) -> dict[str, Any]:
    failure = s.last_failure
    return {
        "system": s.name,
        "zone": s.zone,
        "role": s.role,
        "in_inventory": s.in_inventory,
        "rto_s": s.rto_s,
        "rpo_s": s.rpo_s,
        "verifications": s.verifications,
        "passes": s.passes,
        "rto_met": s.rto_met,
        "measured": len(s.measured),
        "interval_days": s.interval_days,
        "last_pass": s.last_pass.isoformat() if s.last_pass else None,
        "points": [
            {
                "at": p.at.isoformat(),
                "run_id": p.run_id,
                "verdict": p.verdict,
                "recovery_s": p.recovery_s,
                "rto_s": p.rto_s,
                "backup_age_s": p.backup_age_s,
                "rpo_s": p.rpo_s,
            }
            for p in s.points
        ],
        "last_failure": None
        if failure is None
        else {
            "run_id": failure.run_id,
            "at": failure.at.isoformat(),
            "verdict": failure.verdict,
            "reason": failure.reason,
            "checks": failure.checks,
        },
    }


# --------------------------------------------------------------------------- PDF


def chromium() -> str | None:
    """The Chromium binary: ``$RESTOREDRILL_CHROMIUM``, else chromium on PATH."""
    if os.environ.get("RESTOREDRILL_CHROMIUM"):
        return os.environ["RESTOREDRILL_CHROMIUM"]
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


def offline_flags(profile: str) -> list[str]:
    """Headless Chromium that cannot reach any network: every host name is unresolvable,
    every proxy request goes to a closed port, background services are off."""
    flags = [
        "--headless=new",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--metrics-recording-only",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=http://127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
        f"--user-data-dir={profile}",
    ]
    if os.geteuid() == 0:  # Chromium's sandbox refuses to run as root
        flags.append("--no-sandbox")
    return flags


def pdf(html_text: str, output: Path, *, timeout: float = 180) -> None:
    """Print the HTML to ``output`` with headless Chromium, offline."""
    binary = chromium()
    if binary is None:
        raise ReportError(
            "PDF needs Chromium (Debian: apt-get install chromium; or set RESTOREDRILL_CHROMIUM); "
            "--format html writes the same report without it"
        )
    with tempfile.TemporaryDirectory(prefix="restoredrill-pdf-") as tmp:
        source = Path(tmp) / "report.html"
        source.write_text(html_text, encoding="utf-8")
        target = Path(tmp) / "report.pdf"
        command = [
            binary,
            *offline_flags(str(Path(tmp) / "profile")),
            "--no-pdf-header-footer",
            f"--print-to-pdf={target}",
            source.as_uri(),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ReportError(f"Chromium did not print the PDF within {timeout:.0f} s") from None
        except OSError as exc:
            raise ReportError(f"cannot run {binary}: {exc.strerror or exc}") from None
        if done.returncode != 0 or not target.is_file() or target.stat().st_size == 0:
            tail = (done.stderr or "").strip().splitlines()[-3:]
            raise ReportError(
                f"Chromium failed to print the PDF (exit {done.returncode}): " + " | ".join(tail)
            )
        write(output, target.read_bytes())


def write(output: Path, data: str | bytes) -> None:
    """Write ``output`` whole (a temporary file renamed), or raise ReportError."""
    temporary = output.with_name(f".{output.name}.tmp")
    try:
        if isinstance(data, str):
            temporary.write_text(data, encoding="utf-8")
        else:
            temporary.write_bytes(data)
        temporary.replace(output)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise ReportError(f"cannot write {output}: {exc.strerror or exc}") from None
