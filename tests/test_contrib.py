"""``contrib/syncledger.service`` (issue 25): a unit systemd accepts, that restarts a fail-stop (exit 3) and never
a refused start (exit 2) or a clean stop, stops with SIGTERM within a timeout above the shutdown grace, in a
sandbox."""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

from syncledger.server.config import Config

UNIT = pathlib.Path(__file__).resolve().parent.parent / "contrib" / "syncledger.service"


def _directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_the_unit_restarts_a_fail_stop_only_and_stops_cleanly_in_a_sandbox():
    d = _directives()
    assert d["Type"] == ["simple"]
    assert d["ExecStart"] == ["/usr/bin/env syncledger serve --config /etc/syncledger/syncledger.toml"]
    assert d["Restart"] == ["on-failure"] and d["RestartPreventExitStatus"] == ["2"]
    assert d["RestartForceExitStatus"] == ["3"]
    assert d["KillSignal"] == ["SIGTERM"]
    assert float(d["TimeoutStopSec"][0].removesuffix("s")) > Config.shutdown_grace
    for key, value in {"DynamicUser": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                       "NoNewPrivileges": "yes", "StateDirectory": "syncledger",
                       "ReadWritePaths": "/var/lib/syncledger",
                       "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX"}.items():
        assert d[key] == [value], key
    assert "@system-service" in d["SystemCallFilter"]


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    copy = tmp_path / "syncledger.service"
    copy.write_text(UNIT.read_text())
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "syncledger.service" not in done.stderr, done.stderr
