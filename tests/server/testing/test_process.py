"""The plugin's process fixtures (``syncledger_server``, ``syncledger_server_session``, ``running_server``) and
its word when pytest-trio is missing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from syncledger.server.client import connect
from syncledger.server.testing.pytest_plugin import ServerProcessError, running_server

ROOT = Path(__file__).resolve().parents[3]


def _processes() -> dict[int, str]:
    """Every live process: pid -> its command line and working directory."""
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            where = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            where += " cwd=" + os.readlink(entry / "cwd")
        except (OSError, ValueError):  # not a process, or one that just ended
            continue
        if stat.rsplit(")", 1)[1].split()[0] != "Z":  # (a zombie has ended)
            found[int(entry.name)] = where
    return found


async def test_the_server_answers_the_manager_api_the_event_websocket_the_wallet_and_the_admin_listener(
        syncledger_server_session):
    server = syncledger_server_session
    async with open_websocket_url(f"{server.ws_url}?token={server.token}") as events, \
            connect(server.host, server.tcp_port, server.token) as client:
        pong = await client.call("Ping")
        assert pong.ok and pong.data["pong"] is True
        login = (await client.call("AddUser", {"name": "t", "currency": "EUR"})).data["login"]
        credit = await client.call("CreditIn", {"login": login, "amount": Decimal("12.5"), "comment": "c"})
        assert credit.ok and credit.data["login"] == login, credit
        with trio.fail_after(10):
            event = json.loads(await events.get_message())
        assert (event["event"], event["data"]["login"]) == ("trade:event", login)
        sid = (await client.call("OpenGameSession", {"login": login})).data["sid"]
    body = {"sid": sid, "userId": str(login), "currency": "EUR"}
    async with httpx.AsyncClient(timeout=10) as http:
        balance = (await http.post(server.wallet_url + "balance", params={"authToken": server.wallet_token},
                                   json=body)).json()
        refused = (await http.post(server.wallet_url + "balance", params={"authToken": "not-it"}, json=body)).json()
        health = await http.get(server.admin_url + "healthz")
    assert (balance["status"], balance["balance"], balance["bonus"]) == ("OK", 0, 12.5)
    assert refused["status"] == "INVALID_TOKEN_ID"
    assert health.status_code == 200


def _call(conn, server, command: str, data: dict) -> dict:
    """One manager API request on a blocking socket's file, and its reply."""
    request = {"command": command, "extID": f"{command}-{server.pid}", "data": data, "__token": server.token}
    conn.write(json.dumps(request).encode() + b"\n")
    conn.flush()
    return json.loads(conn.readline())


def test_a_test_of_its_own_gets_a_server_of_its_own_on_a_fresh_ledger(syncledger_server, syncledger_server_session):
    assert syncledger_server.pid != syncledger_server_session.pid
    seen = []
    for server in (syncledger_server_session, syncledger_server):
        with socket.create_connection((server.host, server.tcp_port), timeout=10) as sock, sock.makefile("rwb") as f:
            assert _call(f, server, "AddUser", {"name": "t"})["status"] == 200
            seen.append(len(_call(f, server, "GetUsers", {})["data"]["users"]))
    assert seen[0] >= 1 and seen[1] == 1  # the session's ledger may hold earlier tests' accounts; this one only its own


def test_a_server_that_did_not_exit_with_0_is_an_error(tmp_path, syncledger_seed):
    with pytest.raises(ServerProcessError, match=r"exited with -9, not 0; its log:"):
        with running_server(tmp_path, syncledger_seed, ["--writer", "thread"]) as server:
            os.kill(server.pid, signal.SIGKILL)
    assert server.pid not in _processes()


def test_a_server_that_cannot_start_is_an_error_with_its_own_line(tmp_path, syncledger_seed):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(ServerProcessError) as raised:
            with running_server(tmp_path, syncledger_seed, ["--tcp-port", str(port)]):
                pytest.fail("it started")  # pragma: no cover
    said = str(raised.value).split("\n")
    assert said[0] == "syncledger serve exited with 2 before it listened; its log: ", said
    assert said[1:] == [f"syncledger: cannot listen on 127.0.0.1:{port}: Address already in use"], said


@pytest.fixture(scope="module")
def without_pytest_trio(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """An integrator's project with pytest-asyncio and no pytest-trio (``-p no:trio``): the asyncio example as it
    stands, and a test that asks for an in-process fixture; run once, (its pytest run, its basetemp)."""
    project = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "examples" / "test_server_process_asyncio.py", project)
    (project / "test_in_process.py").write_text("async def test_in_process(syncledger_client):\n    pass\n")
    (project / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    basetemp = project / "basetemp"
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:trio", "-p", "no:cacheprovider", "-rA",
                           f"--basetemp={basetemp}"], cwd=project, env=env, capture_output=True, text=True, timeout=120)
    return done, basetemp


def test_without_pytest_trio_an_in_process_fixture_says_to_install_it(without_pytest_trio):
    done, _ = without_pytest_trio
    lines = done.stdout.splitlines()
    assert [line.split(" - ")[0] for line in lines if line.startswith("ERROR ")] == [
        "ERROR test_in_process.py::test_in_process"], done.stdout
    said = lines[next(i for i, line in enumerate(lines) if "ERROR at setup of test_in_process" in line) + 1]
    assert said.startswith("syncledger's in-process fixtures (syncledger, syncledger_client, syncledger_token, "
                           "syncledger_ports) run the server inside a Trio test and need pytest-trio"), said
    assert "pip install 'syncledger[pytest]'" in said and "syncledger_server" in said
    assert "fixture 'nursery' not found" not in done.stdout


def test_the_asyncio_example_passes_under_pytest_asyncio_without_pytest_trio_and_leaves_no_process(
        without_pytest_trio):
    done, basetemp = without_pytest_trio
    assert "PASSED test_server_process_asyncio.py::test_a_bet_placed_by_the_game_shows_in_my_back_office" in \
        done.stdout.splitlines(), done.stdout + done.stderr
    assert done.returncode == 1 and "1 passed, 1 error" in done.stdout  # (the error: the test above)
    # the run's servers and their writer processes: in folders under its basetemp
    assert [where for where in _processes().values() if str(basetemp) in where] == []
