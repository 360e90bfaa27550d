"""JUnit XML of runs and regressions, validated against the Jenkins JUnit schema.

tests/data/jenkins-junit.xsd restates the rules of the Jenkins xUnit plugin's junit-10.xsd
(see its header); lxml validates against it. The counts and times, which that schema
leaves untyped, are checked here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from lxml import etree

from restoredrill.checks.base import CheckResult, Status
from restoredrill.flows.compare import compare
from restoredrill.flows.junit import for_regression, for_run
from restoredrill.flows.regress import RegressionRecord
from restoredrill.flows.results import RunRecord, SystemResult, Verdict
from restoredrill.twins.snapshot import Entry, Snapshot

XSD = Path(__file__).resolve().parents[1] / "data" / "jenkins-junit.xsd"
NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def schema():
    return etree.XMLSchema(etree.parse(str(XSD)))


def valid(path: Path):
    doc = etree.parse(str(path))
    s = schema()
    assert s.validate(doc), s.error_log
    root = doc.getroot()
    for suite in root.iter("testsuite"):  # counts the schema cannot check
        cases = suite.findall("testcase")
        assert int(suite.get("tests")) == len(cases)
        for outcome, attr in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
            assert int(suite.get(attr)) == sum(c.find(outcome) is not None for c in cases)
        assert float(suite.get("time")) >= 0
    assert int(root.get("tests")) == sum(int(s.get("tests")) for s in root.findall("testsuite"))
    return root


def check(name: str, status: str, expected=None, observed=None, message="") -> CheckResult:
    return CheckResult(name=name, kind="http", status=Status(status), expected=expected,
                       observed=observed, message=message, duration_s=0.25)  # fmt: skip


def test_the_schema_rejects_what_jenkins_does_not_read(tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text('<testsuites><testsuite name="x"><testcase/></testsuite></testsuites>')
    assert not schema().validate(etree.parse(str(bad)))  # no tests=, no testcase name=
    skipped_total = tmp_path / "skipped.xml"
    skipped_total.write_text('<testsuites skipped="1"><testsuite tests="0"/></testsuites>')
    assert not schema().validate(etree.parse(str(skipped_total)))


def test_a_run_as_junit(tmp_path: Path) -> None:
    record = RunRecord(run_id="r1", site="demo-plant", started_at=NOW, systems=[
        SystemResult(system="mes", verdict=Verdict.FAIL, recovery_time_s=12.5, rto_s=180, checks=[
            check("MES health", "pass", 200, 200),
            check("order", "fail", {"order": "PO-4711"}, {"order": "PO-1"}),
            check("config", "error", message="no answer within 10s\x00\x1b[31m"),
        ]),
        SystemResult(system="erp", verdict=Verdict.ERROR, reason="restore: truncated archive"),
        SystemResult(system="reporting", verdict=Verdict.BLOCKED, reason="not run: depends on erp"),
    ])  # fmt: skip
    path = tmp_path / "run.xml"
    for_run(record).write(path)
    root = valid(path)
    mes, erp, reporting = root.findall("testsuite")
    assert mes.get("name") == "demo-plant.mes" and mes.get("tests") == "4"
    assert (mes.get("failures"), mes.get("errors")) == ("1", "1")
    order = mes.find("testcase[@name='order']/failure")
    assert "PO-4711" in order.text and "PO-1" in order.text
    config = mes.find("testcase[@name='config']/error")
    assert config.get("message") == "no answer within 10s\\x00\\x1b[31m"  # escaped, not dropped
    assert erp.find("testcase/error").get("message") == "restore: truncated archive"
    assert reporting.find("testcase/skipped") is not None


def test_a_regression_as_junit(tmp_path: Path) -> None:
    def rec(observed: float, status: str, verdict: Verdict) -> RunRecord:
        c = check("TankLevel", status, {"min": 40, "max": 60}, observed)
        s = SystemResult(system="line1-gateway", verdict=verdict, recovery_time_s=8.0, checks=[c])
        return RunRecord(run_id="r", site="demo-plant", started_at=NOW, systems=[s])

    def shot(value: float) -> Snapshot:
        entry = Entry(type="Double", value=value, moving=True, low=value, high=value + 1, range=(40, 60))
        return Snapshot(owner="system line1-gateway opcua 4840/gateway/", protocol="opcua",
                        endpoint="opc.tcp://10.77.0.60:4840/gateway/",
                        entries={"Objects/2:Line1/2:TankLevel": entry})  # fmt: skip

    base, cand = rec(45.0, "pass", Verdict.PASS), rec(1e-8, "fail", Verdict.FAIL)
    plc = Snapshot(owner="device line1-plc modbus", protocol="modbus", endpoint="modbus://10.77.0.100:502")
    record = RegressionRecord(
        regression_id="g1", site="demo-plant", started_at=NOW, verdict="regression",
        revisions={"base": "abc", "head": "def"}, baseline=base, candidate=cand,
        comparison=compare(base, cand, [shot(45.0), plc], [shot(1e-8), plc]),
    )  # fmt: skip
    path = tmp_path / "regress.xml"
    for_regression(record).write(path)
    root = valid(path)
    gateway, snaps = root.findall("testsuite")
    failure = gateway.find("testcase[@name='TankLevel']/failure")
    assert failure.get("type") == "newly failing"
    assert "45.0" in failure.get("message") and "1e-08" in failure.get("message")
    entry = snaps.find("testcase[@name='Objects/2:Line1/2:TankLevel: value']/failure")
    assert "outside 40..60" in entry.get("message")
    assert snaps.find("testcase[@classname='demo-plant.snapshot.device line1-plc modbus']") is not None
    props = {p.get("name"): p.get("value") for p in gateway.iter("property")}
    assert props["revision base"] == "abc" and props["verdict"] == "regression"
