"""Alerts through real Apprise to a real local SMTP server and HTTP webhook (127.0.0.1 only)."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest
from localservers import SMTP_PASSWORD, Hooks, Mailbox, free_port
from pydantic import ValidationError
from test_evidence import make_run

from restoredrill.flows.alerts import (
    AlertConfig,
    AlertTarget,
    change,
    check_targets,
    mask,
    plan_alerts,
    plan_digest,
    send,
)
from restoredrill.flows.evidence import EvidenceStore
from restoredrill.flows.results import SystemResult, Verdict

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


# --------------------------------------------------------------------------- state changes


def result(verdict: Verdict) -> SystemResult:
    return SystemResult(system="x", verdict=verdict)


@pytest.mark.parametrize(
    ("previous", "now", "event"),
    [
        (Verdict.PASS, Verdict.FAIL, "fail"),
        (Verdict.FAIL, Verdict.FAIL, None),
        (Verdict.FAIL, Verdict.PASS, "recovered"),
        (Verdict.RTO_EXCEEDED, Verdict.PASS, "recovered"),
        (Verdict.PASS, Verdict.PASS, None),
        (None, Verdict.PASS, None),
        (None, Verdict.ERROR, "error"),
        (Verdict.FAIL, Verdict.RTO_EXCEEDED, "rto_exceeded"),
        (Verdict.PASS, Verdict.RPO_EXCEEDED, "rpo_exceeded"),
    ],
)
def test_change(previous: Verdict | None, now: Verdict, event: str | None) -> None:
    assert change(previous, result(now)) == event


def test_routing_by_target_and_event(tmp_path: Path) -> None:
    everything = AlertTarget(url="json://127.0.0.1:1/all")
    recovered_only = AlertTarget(url="json://127.0.0.1:1/rec", on={"recovered"})
    historian_team = AlertTarget(url="json://127.0.0.1:1/hist")
    config = AlertConfig(
        site=[everything, recovered_only], systems={"historian": [historian_team, everything]}
    )
    run = make_run("r2", Verdict.FAIL)  # historian fails, mes passes, erp blocked
    previous = {"historian": Verdict.PASS, "mes": Verdict.ERROR, "erp": Verdict.BLOCKED}
    alerts = {a.target.url: a for a in plan_alerts(run, previous, config)}
    assert set(alerts) == {
        "json://127.0.0.1:1/all",
        "json://127.0.0.1:1/rec",
        "json://127.0.0.1:1/hist",
    }
    assert alerts["json://127.0.0.1:1/all"].systems == [
        "historian",
        "mes",
    ]  # once, though listed twice
    assert alerts["json://127.0.0.1:1/rec"].systems == ["mes"]
    assert alerts["json://127.0.0.1:1/hist"].systems == ["historian"]
    assert alerts["json://127.0.0.1:1/rec"].failure is False
    body = alerts["json://127.0.0.1:1/hist"].body
    for text in ("historian: FAIL (was pass)", "recovery time: 4m12s (RTO 15m00s)",
                 "backup age: 3h02m (RPO 24h00m)", "last sample (http, fail): expected 200, observed 503",
                 "run r2", "site demo-plant"):  # fmt: skip
        assert text in body, body
    assert (
        plan_alerts(
            run, {"historian": Verdict.FAIL, "mes": Verdict.PASS, "erp": Verdict.BLOCKED}, config
        )
        == []
    )


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


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"url": "bogus://token@127.0.0.1"}, "unknown alert URL scheme 'bogus'"),
        ({"url": "127.0.0.1/hook"}, "not an Apprise URL"),
        ({"url": "json://127.0.0.1/x", "url_env": "HOOK"}, "exactly one of url, url_env, url_file"),
        ({}, "exactly one of"),
        ({"url": "json://127.0.0.1/x", "on": ["sometimes"]}, "on"),
        ({"url": "json://127.0.0.1/x", "digest": "25:00"}, "digest"),
        ({"url": "json://127.0.0.1/x", "colour": "red"}, "colour"),
    ],
)
def test_bad_targets_rejected(fields: dict, words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        AlertTarget(**fields)


def test_check_targets_names_the_field(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BAD_URL", "nosuchscheme://s3cr3tvalue@127.0.0.1")
    monkeypatch.setenv("SLACK", "tokenA-only")
    config = AlertConfig(
        site=[AlertTarget(url="json://127.0.0.1:9/ok"), AlertTarget(url_env="BAD_URL")],
        systems={
            "mes": [AlertTarget(url="slack://${ENV:SLACK}"), AlertTarget(url_file="missing.url")]
        },
        base_dir=tmp_path,
    )
    problems = check_targets(config)
    assert len(problems) == 3, problems
    assert problems[0].startswith("alerts[1].url_env: Apprise cannot use nosuchscheme://…")
    assert problems[1].startswith("systems[mes].alerts[0].url: Apprise cannot use slack://")
    assert problems[2].startswith("systems[mes].alerts[1].url_file: cannot read secret file")
    assert not any("s3cr3tvalue" in p or "tokenA-only" in p for p in problems)


def test_mask_and_labels() -> None:
    assert mask("smtp://user:hunter22@mail.plant/x") == "smtp://user:****@mail.plant/x"
    target = AlertTarget(
        url="mailtos://drill:plain-pass@mail.plant.example:465?to=ops@plant.example"
    )
    assert target.label() == "mailtos://drill:****@mail.plant.example:465/…"
    assert AlertTarget(url_env="TEAMS_URL").label() == "$TEAMS_URL"
    assert AlertTarget(url="json://127.0.0.1/x", digest="06:30").digest_cron == "30 6 * * *"


def test_digest_summarises_the_day() -> None:
    config = AlertConfig(
        site=[
            AlertTarget(url="json://127.0.0.1:1/d", digest="07:00"),
            AlertTarget(url="json://127.0.0.1:1/n"),
        ]
    )
    runs = [
        make_run("r1", Verdict.PASS),
        make_run("r2", Verdict.FAIL, offset_h=12),
        make_run("old", offset_h=-48),
    ]
    [digest] = plan_digest(
        runs, config, site="demo-plant", now=runs[1].started_at + timedelta(hours=1)
    )
    assert digest.target.url == "json://127.0.0.1:1/d"
    assert "2 run(s)" in digest.body
    assert "- historian: fail" in digest.body and "1 of 2 run(s) passed" in digest.body
    assert "not passing" in digest.title and digest.failure
