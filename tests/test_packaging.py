"""The built wheel installs one import namespace, ``syncledger``: no top-level ``ledger`` or ``server`` that
could shadow (or be shadowed by) an integrator's own packages."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHECK = """
import importlib.util, sys
from importlib import resources
assert importlib.util.find_spec("server") is None and importlib.util.find_spec("ledger") is None
import syncledger.server.cli, syncledger.server.pytest_plugin
from syncledger.ledger import Store
assert "site-packages" in syncledger.server.cli.__file__, syncledger.server.cli.__file__
assert "CREATE TABLE" in resources.files("syncledger.ledger").joinpath("schema.sql").read_text()
store = Store(":memory:")
print("ok", store.verify().ok if hasattr(store, "verify") else True)
"""


def test_the_wheel_installs_only_the_syncledger_namespace(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("syncledger-*.whl"))
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith((".dist-info", ".data"))} == {"syncledger"}
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=False)  # dependencies from here, syncledger from the wheel
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True)
    entry = (env_dir / "bin" / "syncledger").read_text()
    assert "syncledger.server.cli" in entry
    done = subprocess.run([str(python), "-c", CHECK], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stderr
