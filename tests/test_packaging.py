"""The built wheel installs one import namespace, ``syncledger``: no top-level ``ledger`` or ``server`` that
could shadow (or be shadowed by) an integrator's own packages; and the installed server starts from any
folder, a clone's own included."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from syncledger.server import cli

ROOT = Path(__file__).resolve().parent.parent

CHECK = """
import importlib.util, sys
from importlib import resources
assert importlib.util.find_spec("server") is None and importlib.util.find_spec("ledger") is None
import syncledger.server.cli, syncledger.server.testing.pytest_plugin
from syncledger.ledger import Store, verify
assert syncledger.server.cli.__file__.startswith(sys.prefix), syncledger.server.cli.__file__
assert "CREATE TABLE" in resources.files("syncledger.ledger").joinpath("schema.sql").read_text()
store = Store(":memory:")
print("ok" if verify(store.db).ok else "verify failed on a fresh ledger")
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(wheel, venv): the wheel built from this tree, installed (not editable) into a venv that takes its
    dependencies from the running environment, whatever that is (a venv, or the base interpreter). Made once per
    run: under xdist in the run's folder that all workers share, the first worker to come builds it while the
    others wait (two builds of this tree at once collide in its build/ folder: "File exists: build/...")."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # (the parent: this run's, under xdist)
    tmp = shared / "packaging"
    with open(shared / "packaging.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (tmp / "done").exists():
            shutil.rmtree(tmp, ignore_errors=True)
            _build_and_install(tmp)
            (tmp / "done").write_text("")
    return next((tmp / "dist").glob("syncledger-*.whl")), tmp / "venv"


def _build_and_install(tmp: Path) -> None:
    subprocess.run([sys.executable, "-P", "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp / "dist"), str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp / "dist").glob("syncledger-*.whl"))
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=False)
    # the running environment's site-packages, after the venv's own (syncledger from the wheel) and without
    # running their .pth files (an editable syncledger's finder stays out)
    paths = sysconfig.get_paths()
    Path(sysconfig.get_path("purelib", "venv", vars={"base": str(env_dir)}), "running-env.pth").write_text(
        f"{paths['purelib']}\n{paths['platlib']}\n")
    # --ignore-installed: the running environment's syncledger is on the venv's path; installed without -e it
    # would count as "already installed" and the wheel would not go in at all
    subprocess.run([sys.executable, "-P", "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install", "-q",
                    "--no-deps", "--no-index", "--ignore-installed", str(wheel)], check=True, capture_output=True)


def test_the_wheel_installs_only_the_syncledger_namespace(installed):
    wheel, env_dir = installed
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith((".dist-info", ".data"))} == {"syncledger"}
    entry = (env_dir / "bin" / "syncledger").read_text()
    assert "syncledger.server.cli" in entry
    done = subprocess.run([str(env_dir / "bin" / "python"), "-c", CHECK], cwd=wheel.parent, capture_output=True,
                          text=True)
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stderr


def test_the_installed_server_starts_in_a_folder_holding_a_syncledger_package(installed, tmp_path):
    """As in a clone's own folder after ``pip install .``: its ``syncledger/`` must not shadow the installed
    package in the writer process (nor in any other child)."""
    (tmp_path / "syncledger").mkdir()
    (tmp_path / "syncledger" / "__init__.py").write_text("")
    serve = subprocess.Popen([str(installed[1] / "bin" / "syncledger"), "serve", "--db", "ledger.db", "--tcp-port",
                              "0", "--ws-port", "0", "--wallet-port", "0", "--admin-port", "-1"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = serve.stdout.readline()
        assert line.startswith("listening tcp="), (line, serve.communicate(timeout=30)[1])
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 0, serve.stderr.read()
    finally:
        serve.kill()
        serve.wait()


def test_serve_says_in_one_line_why_when_the_writer_cannot_start(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "executable", "/bin/false")  # the writer process ends at once
    assert cli.main(["serve", "--db", str(tmp_path / "ledger.db"), "--tcp-port", "0", "--ws-port", "0",
                     "--wallet-port", "0", "--admin-port", "-1"]) == 2
    out, err = capsys.readouterr()
    assert not out and err.splitlines() == [
        f"syncledger: the writer process ended while opening {tmp_path / 'ledger.db'} (exit code 1)"], err
