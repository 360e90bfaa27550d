"""Pre-change regression testing: the affected systems, run with the baseline configuration
and with the candidate, snapshotted and compared.

1. :func:`plan`: the two configurations on disk (flows/candidate.py), both validated
   (a candidate that does not validate is bad input, named by file and line), and what
   the change affects (flows/changes.py).
2. :func:`run`: the ``regress`` flow runs the affected systems and their dependents in
   the baseline, then in the candidate, one after the other in the same sandbox
   conditions (the site's subnets and limits); while each run's systems are still up,
   their OT endpoints and devices are snapshotted (flows/snapshots.py). The two runs
   are then compared (flows/compare.py).

Nothing of either run goes to the evidence store on its own: the regression is recorded
as one record of kind ``regression`` (flows/regress_evidence.py).
"""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from restoredrill.configfile import ConfigFileError, load, problem
from restoredrill.twins.snapshot import Snapshot

from .candidate import (
    Configurations,
    RegressInputError,
    copy_run_folders,
    from_candidate,
    from_git,
)
from .changes import Impact, impact, reach, uses
from .compare import Comparison, compare
from .inventory import InventoryError, LoadedSite, load_site
from .results import RunRecord


class RegressionRecord(BaseModel):
    """A regression test: what changed, what ran, what differs, the verdict."""

    regression_id: str
    site: str
    started_at: datetime
    finished_at: datetime | None = None
    verdict: Literal["regression", "no regression"] = "no regression"
    summary: str = ""
    source: dict[str, str] = Field(default_factory=dict)
    """``{"candidate": DIR}`` or ``{"git_base": REF}``."""
    revisions: dict[str, Any] = Field(default_factory=dict)
    changed_files: list[dict[str, Any]] = Field(default_factory=list)
    ignored_files: list[dict[str, str]] = Field(default_factory=list)
    affected: dict[str, Any] = Field(default_factory=dict)
    baseline: RunRecord | None = None
    candidate: RunRecord | None = None
    snapshots: dict[str, list[Snapshot]] = Field(default_factory=dict)
    comparison: Comparison = Field(default_factory=Comparison)


@dataclass
class Plan:
    """Both configurations, loaded and validated, and what the change affects."""

    configs: Configurations
    baseline: LoadedSite
    candidate: LoadedSite
    impact: Impact
    original: LoadedSite
    """The site file as given (its evidence store records the regression)."""
    regression_id: str

    def close(self) -> None:
        self.configs.close()

    def __enter__(self) -> Plan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- planning


def plan(site: Path, candidate: Path | None = None, git_base: str | None = None) -> Plan:
    """The two configurations of a regression; RegressInputError for bad input."""
    if (candidate is None) == (git_base is None):
        raise RegressInputError("give --candidate DIR or --git-base REF (one of them)")
    try:
        original = load_site(site)
    except InventoryError as exc:
        raise RegressInputError(["the site itself does not validate:", *exc.problems]) from None
    paths = reach(original)
    regression_id = new_regression_id()
    if candidate is not None:
        configs = from_candidate(site, candidate, paths, regression_id)
    else:
        configs = from_git(site, git_base or "", paths, regression_id)

    try:
        baseline = _load(
            configs, configs.baseline, "the baseline" + (f" ({git_base})" if git_base else "")
        )
        cand = _load(configs, configs.candidate, "the candidate")
        mirrored = baseline if git_base else cand
        root = configs.baseline_root if git_base else configs.candidate_root
        copy_run_folders(
            configs,
            [u.path for u in uses(mirrored, root) if u.folder and u.what.startswith("run.files")],
        )
        found = impact(
            baseline, cand, configs.changed, configs.baseline_root, configs.candidate_root
        )
        _validate_files(configs, cand, found)
        return Plan(configs, baseline, cand, found, original, regression_id)
    except BaseException:
        configs.close()
        raise


def _load(configs: Configurations, path: Path, what: str) -> LoadedSite:
    try:
        return load_site(path)
    except InventoryError as exc:
        raise RegressInputError(
            [f"{what} does not validate:", *(configs.shown(p) for p in exc.problems)]
        ) from None


def _validate_files(configs: Configurations, cand: LoadedSite, found: Impact) -> None:
    """The candidate's files of what the change affects read as they will be used:
    register maps, node lists, NodeSets, testinfra files, ``run.files`` sources."""
    from restoredrill.twins.registers import load_register_map
    from restoredrill.twins.scada import load_node_list

    problems: list[str] = []
    for d in cand.site.devices:
        if d.name not in found.devices:
            continue
        try:
            if d.kind == "plc":
                load_register_map(cand.resolve(d.map))
            else:
                if d.nodes is not None:
                    load_node_list(cand.resolve(d.nodes))
                for path in d.nodesets:
                    _xml(cand.resolve(path))
        except ConfigFileError as exc:
            problems += [p.one_line() for p in exc.problems]
    doc = None
    for i, s in enumerate(cand.site.systems):
        if s.name not in found.systems:
            continue
        for j, f in enumerate(s.run.files):
            if not (cand.base_dir / f.source).exists():
                doc = doc or load(cand.path)
                loc = ("systems", i, "run", "files", j, "source")
                problems.append(
                    problem(cand.path, doc.line(loc), f"systems[{i}].run.files[{j}].source",
                            f"{f.source} does not exist")
                )  # fmt: skip
        for check in s.checks:
            if check.kind == "testinfra":
                try:
                    _python(cand.resolve(check.file))
                except ConfigFileError as exc:
                    problems.append(exc.one_line())
    if problems:
        raise RegressInputError(
            ["the candidate does not validate:", *(configs.shown(p) for p in problems)]
        )


def _xml(path: Path) -> None:
    try:
        ET.parse(path)
    except ET.ParseError as exc:
        raise ConfigFileError(
            path, exc.position[0], "", f"not a NodeSet2 XML file: {exc}"
        ) from None
    except OSError as exc:
        raise ConfigFileError(path, 0, "", f"cannot read it: {exc.strerror}") from None


def _python(path: Path) -> None:
    try:
        ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as exc:
        raise ConfigFileError(path, exc.lineno or 0, "", f"not Python: {exc.msg}") from None
    except OSError as exc:
        raise ConfigFileError(path, 0, "", f"cannot read it: {exc.strerror}") from None


# --------------------------------------------------------------------------- running


def new_regression_id() -> str:
    from .results import new_run_id

    return "g" + new_run_id()[1:]


def run(
    the_plan: Plan,
    *,
    regression_id: str | None = None,
    tolerance: float = 0.2,
    floor_s: float = 5.0,
    window: float = 3.0,
    ignore: list[str] | None = None,
    concurrency: int | None = None,
) -> RegressionRecord:
    """Run both configurations (if the change affects anything) and compare them."""
    p = the_plan
    record = RegressionRecord(
        regression_id=regression_id or p.regression_id,
        site=p.candidate.site.site,
        started_at=datetime.now(UTC),
        revisions=p.configs.revisions,
        source=p.configs.source,
        changed_files=[f.__dict__ for f in p.impact.changed],
        ignored_files=[{"path": path, "why": why} for path, why in p.configs.ignored]
        + [{"path": f.path, "why": "not used by the site"} for f in p.impact.unused],
        affected=p.impact.as_dict() | {
            "baseline": p.impact.to_run(p.baseline.site),
            "candidate": p.impact.to_run(p.candidate.site),
        },
    )  # fmt: skip
    if p.impact.nothing:
        record.summary = (
            "the change affects no system or device" if p.impact.changed else "nothing changed"
        )
        record.finished_at = datetime.now(UTC)
        return record
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from .regress_flow import regress_flow

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        sides = regress_flow(
            str(p.baseline.path), str(p.candidate.path),
            p.impact.to_run(p.baseline.site), p.impact.to_run(p.candidate.site),
            p.impact.devices_alone(p.baseline.site), p.impact.devices_alone(p.candidate.site),
            record.regression_id, window, concurrency,
        )  # fmt: skip
    (record.baseline, base_shots), (record.candidate, cand_shots) = sides
    record.snapshots = {"baseline": base_shots, "candidate": cand_shots}
    record.comparison = compare(
        record.baseline, record.candidate, base_shots, cand_shots,
        tolerance=tolerance, floor_s=floor_s, ignore=ignore or (),
    )  # fmt: skip
    record.verdict = record.comparison.verdict  # type: ignore[assignment]
    record.summary = _summary(record)
    record.finished_at = datetime.now(UTC)
    return record


def _summary(record: RegressionRecord) -> str:
    c = record.comparison
    parts = []
    failing = [d for d in c.checks if d.regression]
    if failing:
        parts.append(f"{len(failing)} check(s) newly failing or changed")
    entries = [e for e in c.entries if e.regression]
    if entries:
        parts.append(f"{len(entries)} snapshot entr{'y' if len(entries) == 1 else 'ies'} changed")
    systems = [s for s in c.systems if s.regression]
    if systems:
        parts.append(f"{len(systems)} system(s) worse: " + ", ".join(s.system for s in systems))
    return "; ".join(parts) if parts else "no difference that counts as a regression"


__all__ = ["Plan", "RegressInputError", "RegressionRecord", "plan", "run"]
