"""A plant's own testinfra tests (fixture for tests/test_checks.py): two pass, one fails."""


def test_mes_config_points_at_historian(host):
    conf = host.file("/etc/mes/mes.conf")
    assert conf.exists
    assert conf.contains("historian=10.77.0.10")


def test_web_server_runs(host):
    assert host.socket("tcp://0.0.0.0:8080").is_listening


def test_mes_config_is_private(host):
    assert host.file("/etc/mes/mes.conf").mode == 0o600
