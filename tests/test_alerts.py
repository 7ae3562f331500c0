"""``contrib/alerts.yml`` (issue 25): rules promtool accepts, whose unit tests (tests/alerts_test.yml and
alerts_days_test.yml) pass, and that name only metrics a real server's ``/metrics`` has."""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess

import httpx
import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from syncledger.server.testing import Harness
from tests.conftest import ROOT, admin_token

RULES = ROOT / "contrib" / "alerts.yml"
UNIT_TESTS = (ROOT / "tests" / "alerts_test.yml", ROOT / "tests" / "alerts_days_test.yml")  # (minutes; days)
PROMETHEUS_OWN = {"up"}  # series Prometheus makes itself, for each target


def _promtool(*args: str) -> subprocess.CompletedProcess:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus: Debian's package ships it)")
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120)


def test_promtool_checks_the_rules():
    done = _promtool("check", "rules", str(RULES))
    assert done.returncode == 0 and "SUCCESS: 16 rules found" in done.stdout, done.stdout + done.stderr


def test_the_rules_pass_their_unit_tests():
    done = _promtool("test", "rules", *map(str, UNIT_TESTS))
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


def metric_names(rules: str) -> set[str]:
    """The metric names the rules' ``expr`` use (a multi-line expr is the lines indented under it)."""
    exprs, indent = [], None
    for line in rules.splitlines():
        depth = len(line) - len(line.lstrip())
        if line.strip().startswith("expr:"):
            exprs.append(line.split("expr:", 1)[1])
            indent = depth
        elif indent is not None and depth > indent and line.strip():
            exprs[-1] += " " + line
        else:
            indent = None
    text = re.sub(r'"[^"]*"', "", " ".join(exprs))  # (label values)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text))
    return {w for w in words if w.startswith(("syncledger_", "process_"))} | (words & PROMETHEUS_OWN)


async def test_every_metric_the_alerts_use_is_on_a_real_servers_metrics(start_server, tmp_path):
    """With TLS (its certificate's expiry is a series), after a wallet call (an answer's series) and a verify
    (the last verify's)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    srv = await start_server(tls_cert=str(tmp_path / "cert.pem"), tls_key=str(tmp_path / "key.pem"))
    await Harness(srv).wallet("check", {"sid": "nope", "userId": "1"})
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{srv.ports.admin}", verify=trusted, timeout=60) as h:
        verified = await h.post("/api/verify", json={}, headers={"authorization": f"Bearer {admin_token(srv)}"})
        assert verified.json()["data"]["ok"] is True
        text = (await h.get("/metrics")).text
    served = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    used = metric_names(RULES.read_text())
    assert {"syncledger_ready", "syncledger_wallet_duration_seconds_bucket", "syncledger_last_verify_ok",
            "syncledger_last_backup_timestamp_seconds", "process_start_time_seconds", "up"} <= used and \
        len(used) == 14, used  # (the parser read them)
    assert sorted(used - served - PROMETHEUS_OWN) == []
