"""The process's own metrics and ``syncledger_build_info`` on /metrics (issue 25); the version the wheel, ``syncledger
--version`` and the metric say is one (pyproject.toml's)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tomllib
from importlib.metadata import version

from tests.server.admin.test_observe import scrape

ROOT = pathlib.Path(__file__).resolve().parents[3]


async def test_metrics_have_the_process_and_the_build(server):
    found = await scrape(server)
    names = {name for name, _ in found}
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
                 "process_start_time_seconds", "python_info"):
        assert name in names, name
    assert found[("process_resident_memory_bytes", ())] > 1_000_000
    assert found[("process_open_fds", ())] >= 3
    builds = {labels: value for (name, labels), value in found.items() if name == "syncledger_build_info"}
    assert builds == {(("version", version("syncledger")),): 1.0}


def test_the_wheel_the_cli_and_the_metric_say_one_version():
    written = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    shown = subprocess.run([sys.executable, "-P", "-m", "syncledger", "--version"], capture_output=True, text=True,
                           check=True, cwd=os.path.dirname(ROOT)).stdout
    from syncledger.server import version as served
    assert version("syncledger") == written  # the installed distribution's (a wheel's METADATA) is pyproject's
    assert shown == f"syncledger {written}\n"
    assert served() == written  # what syncledger_build_info{version} says (see the test above)
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {written}" in changelog, "CHANGELOG.md has no section for this version"
