"""The MES team's own testinfra tests, run by restoredrill against the restored MES."""


def test_mes_config_points_at_historian(host):
    conf = host.file("/etc/mes/mes.conf")
    assert conf.exists
    assert conf.contains("10.77.0.10")


def test_python_is_installed(host):
    assert host.package("python3").is_installed


def test_mes_answers_locally(host):
    out = host.check_output("python3 -c \"import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:8081/health').read().decode())\"")
    assert '"status": "ok"' in out
