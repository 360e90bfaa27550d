"""Alerts through real Apprise to a real local SMTP server and HTTP webhook (127.0.0.1 only)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from localservers import SMTP_PASSWORD, Hooks, Mailbox, free_port
from records import make_run

from restoredrill.flows.alerts import (
    AlertConfig,
    AlertTarget,
    plan_alerts,
    send,
)
from restoredrill.flows.evidence import EvidenceStore
from restoredrill.flows.results import Verdict

HOOK_TOKEN = "hOOk7oken0123456789abcdef"


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("SMTP_PASSWORD", SMTP_PASSWORD)
    secret_file = tmp_path / "hook.token"
    secret_file.write_text(HOOK_TOKEN + "\n")
    return secret_file


def mail_target(port: int) -> AlertTarget:
    return AlertTarget(
        name="ops mail",
        url=f"mailto://drill:${{ENV:SMTP_PASSWORD}}@127.0.0.1:{port}"
        f"?smtp=127.0.0.1&mode=insecure&from=restoredrill@plant.example&to=ops@plant.example",
    )


def hook_target(port: int, token_file: Path, **kw: object) -> AlertTarget:
    return AlertTarget(url=f"json://127.0.0.1:{port}/hooks/${{FILE:{token_file}}}", **kw)


# --------------------------------------------------------------------------- delivery


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # loopback only
def test_email_reaches_local_smtp(smtp: tuple[Mailbox, int], secrets_env: Path) -> None:
    box, port = smtp
    config = AlertConfig(site=[mail_target(port)])
    [alert] = plan_alerts(make_run("r2", Verdict.FAIL), {"historian": Verdict.PASS}, config)
    [delivery] = send([alert])
    assert delivery.ok, delivery
    assert box.logins == [("drill", SMTP_PASSWORD)]  # the secret reached the server, nowhere else
    [msg] = box.messages
    assert msg["To"] == "ops@plant.example"
    assert "historian FAIL" in msg["Subject"]
    text = msg.get_body(("plain", "html")).get_content()
    assert "historian: FAIL (was pass)" in text and "observed 503" in text and "r2" in text
    assert SMTP_PASSWORD not in str(delivery)
    assert delivery.target.startswith("ops mail (mailto://drill:****@127.0.0.1")


def test_webhook_receives_json_and_nothing_leaks(
    webhook: tuple[Hooks, int], secrets_env: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="apprise")
    hooks, port = webhook
    config = AlertConfig(site=[hook_target(port, secrets_env)])
    store = EvidenceStore(f"sqlite:///{tmp_path / 'evidence.db'}")
    verdicts = [Verdict.PASS, Verdict.FAIL, Verdict.FAIL, Verdict.PASS]
    sent = []
    for i, verdict in enumerate(verdicts):
        run = make_run(f"r{i + 1}", verdict, offset_h=24 * i)
        previous = store.previous_verdicts(run)
        store.record(run)
        deliveries = send(plan_alerts(run, previous, config))
        store.record_deliveries(run.run_id, deliveries)
        sent.append(deliveries)
    # first run: nothing changed; pass→fail alerts; fail→fail is quiet; fail→pass recovers
    assert [len(d) for d in sent] == [0, 1, 0, 1]
    assert all(d.ok for ds in sent for d in ds)
    assert [p for p, _ in hooks.posts] == [f"/hooks/{HOOK_TOKEN}"] * 2
    failed, recovered = (payload for _, payload in hooks.posts)
    assert "historian FAIL" in failed["title"] and "observed 503" in failed["message"]
    assert failed["type"] == "failure"
    assert "historian: RECOVERED, now pass (was fail)" in recovered["message"]
    assert recovered["type"] == "success"
    shown = sent[1][0].target
    assert HOOK_TOKEN not in shown and shown.startswith(f"json://127.0.0.1:{port}/hooks/****")
    assert store.deliveries("r2")[0]["target"] == shown
    store.close()
    assert HOOK_TOKEN.encode() not in (tmp_path / "evidence.db").read_bytes()
    assert "json://" in caplog.text  # Apprise did log the URL it posted to ...
    assert HOOK_TOKEN not in caplog.text  # ... but masked


def test_unreachable_targets_report_failure(secrets_env: Path) -> None:
    closed = free_port()
    config = AlertConfig(site=[mail_target(closed), hook_target(closed, secrets_env)])
    alerts = plan_alerts(make_run("r2", Verdict.ERROR), {"historian": Verdict.PASS}, config)
    deliveries = send(alerts)
    assert [d.ok for d in deliveries] == [False, False]
    for d in deliveries:
        assert (
            "Connection refused" in d.reason
            and SMTP_PASSWORD not in str(d)
            and HOOK_TOKEN not in str(d)
        )
        assert d.run_id == "r2" and d.systems == ["historian"]


def test_missing_secret_is_a_failed_delivery(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMTP_PASSWORD", raising=False)
    config = AlertConfig(site=[mail_target(free_port())])
    [delivery] = send(
        plan_alerts(make_run("r2", Verdict.FAIL), {"historian": Verdict.PASS}, config)
    )
    assert not delivery.ok and "SMTP_PASSWORD is not set" in delivery.reason
