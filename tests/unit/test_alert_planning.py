"""Alert planning on plain inputs: state changes, routing to targets, the daily digest,
target validation and masking (no delivery: tests/test_alerts.py sends for real)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from records import make_run

from restoredrill.flows.alerts import (
    AlertConfig,
    AlertTarget,
    change,
    check_targets,
    mask,
    plan_alerts,
    plan_digest,
)
from restoredrill.flows.results import SystemResult, Verdict

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


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("fields", "loc", "words"),
    [
        ({"url": "bogus://token@127.0.0.1"}, ("url",), "unknown alert URL scheme 'bogus'"),
        ({"url": "127.0.0.1/hook"}, ("url",), "not an Apprise URL"),
        (
            {"url": "json://127.0.0.1/x", "url_env": "HOOK"},
            (),
            "exactly one of url, url_env, url_file (got url, url_env)",
        ),
        ({}, (), "exactly one of url, url_env, url_file"),
        ({"url": "json://127.0.0.1/x", "on": ["sometimes"]}, ("on", 0), "Input should be 'fail'"),
        ({"url": "json://127.0.0.1/x", "digest": "25:00"}, ("digest",), "should match pattern"),
        ({"url": "json://127.0.0.1/x", "colour": "red"}, ("colour",), "Extra inputs"),
    ],
)
def test_bad_targets_rejected(fields: dict, loc: tuple, words: str) -> None:
    """Each bad target is one error, at its field, saying what is wrong."""
    with pytest.raises(ValidationError) as info:
        AlertTarget(**fields)
    [error] = info.value.errors()
    assert error["loc"] == loc and words in error["msg"], error


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
