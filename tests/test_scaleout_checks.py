"""Scale-out: each node its own passive range (E060, W060), with real servers."""

import datetime
import types

import pytest
from django.core import checks
from django.utils import timezone

from ftpserver_core import scaleout
from ftpserver_core.models import ServerProcess
from ftpserver_core.options import ServerOptions
from ftpserver_core.state import SharedState

from . import test_commands
from .processes import command_env
from .test_commands import passive_range, settings_module

# The fixtures of test_commands: ftpserver processes, killed at teardown.
ftpserver_cmd = test_commands.ftpserver_cmd
run_ftpserver = test_commands.run_ftpserver


def node_env(tmp_path, node):
    """The environment of a server process calling itself ``node``."""
    directory = tmp_path / node
    directory.mkdir(exist_ok=True)
    return command_env(
        settings_module(directory, FTPSERVER_NODE_NAME=node),
        DJANGO_SETTINGS_MODULE="cmd_settings",
    )


def ports(lo, hi):
    return f"{lo}-{hi}"


def test_overlapping_range_of_another_node_is_refused(
    ftpserver_cmd, run_ftpserver, tmp_path
):
    lo, hi = passive_range(20)
    first = ftpserver_cmd(
        "127.0.0.1:0",
        "--passive-ports",
        ports(lo, hi),
        env=node_env(tmp_path, "node-a"),
    )
    # Registered before its banner, with its range.
    row = ServerProcess.objects.get(pid=first.pid)
    assert (row.node, row.passive_ports) == ("node-a", [[lo, hi]])

    result = run_ftpserver(
        "127.0.0.1:0",
        "--passive-ports",
        ports(lo + 10, hi + 10),
        env=node_env(tmp_path, "node-b"),
    )
    assert result.returncode == 1
    assert "ftpserver_core.E060" in result.stderr
    assert (
        f"This node ('node-b') would take the passive ports {lo + 10}-{hi + 10}, "
        f"and node 'node-a', live on the same database, takes {lo}-{hi}: both "
        f"would open {lo + 10}-{hi}, so a load balancer cannot route their data "
        "connections by port." in result.stderr.replace("\n", " ")
    )
    assert "Starting FTP server" not in result.stdout
    assert not ServerProcess.objects.filter(node="node-b").exists()
    assert first.proc.poll() is None


def test_prefork_workers_of_another_node_are_refused(
    ftpserver_cmd, run_ftpserver, tmp_path
):
    lo, hi = passive_range(20)
    ftpserver_cmd(
        "127.0.0.1:0",
        "--passive-ports",
        ports(lo, hi),
        "--workers",
        "2",
        env=node_env(tmp_path, "node-a"),
    )
    result = run_ftpserver(
        "127.0.0.1:0",
        "--passive-ports",
        ports(hi, hi + 5),
        env=node_env(tmp_path, "node-b"),
    )
    assert result.returncode == 1
    assert "node 'node-a', live on the same database" in result.stderr


def test_disjoint_ranges_both_run(ftpserver_cmd, tmp_path):
    lo, hi = passive_range(20)
    first = ftpserver_cmd(
        "127.0.0.1:0",
        "--passive-ports",
        ports(lo, lo + 9),
        env=node_env(tmp_path, "node-a"),
    )
    second = ftpserver_cmd(
        "127.0.0.1:0",
        "--passive-ports",
        ports(lo + 10, hi),
        "--workers",
        "2",
        env=node_env(tmp_path, "node-b"),
    )
    assert "E060" not in second.stderr
    for server in (first, second):
        with server.client() as ftp:
            ftp.sendcmd("NOOP")
    # The supervisor's own registration goes at its stop; its workers' too.
    assert second.stop() == 0
    assert not ServerProcess.objects.filter(node="node-b").exists()


def test_one_node_shares_its_range_between_processes(ftpserver_cmd, tmp_path):
    lo, hi = passive_range(20)
    for _ in range(2):
        ftpserver_cmd(
            "127.0.0.1:0",
            "--passive-ports",
            ports(lo, hi),
            env=node_env(tmp_path, "node-a"),
        )


def test_different_masquerade_addresses_may_share_ports(ftpserver_cmd, tmp_path):
    lo, hi = passive_range(20)
    for node, address in (("node-a", "192.0.2.1"), ("node-b", "192.0.2.2")):
        ftpserver_cmd(
            "127.0.0.1:0",
            "--passive-ports",
            ports(lo, hi),
            "--masquerade-address",
            address,
            env=node_env(tmp_path, node),
        )
    assert ServerProcess.objects.get(node="node-b").masquerade_address == "192.0.2.2"


def test_a_dead_process_does_not_block(ftpserver_cmd, tmp_path):
    lo, hi = passive_range(20)
    # A node that died an hour ago without unregistering.
    ServerProcess.objects.create(
        node="node-a",
        pid=1,
        heartbeat_at=timezone.now() - datetime.timedelta(hours=1),
        passive_ports=[[lo, hi]],
    )
    server = ftpserver_cmd(
        "127.0.0.1:0",
        "--passive-ports",
        ports(lo, hi),
        env=node_env(tmp_path, "node-b"),
    )
    assert "E060" not in server.stderr


def test_nodes_without_ranges_are_warned(ftpserver_cmd, tmp_path):
    ftpserver_cmd("127.0.0.1:0", env=node_env(tmp_path, "node-a"))
    second = ftpserver_cmd("127.0.0.1:0", env=node_env(tmp_path, "node-b"))
    text = second.stderr.replace("\n", " ")
    assert "ftpserver_core.W060" in text
    assert (
        "This node ('node-b') takes any free port for passive data connections, "
        "and node 'node-a' is live on the same database" in text
    )


# --- the check and the start-up guard, in this process


def live(node, runs, masquerade=""):
    return ServerProcess.objects.create(
        node=node,
        pid=4242,
        heartbeat_at=timezone.now(),
        passive_ports=runs,
        masquerade_address=masquerade,
    )


def test_check_deploy_judges_the_settings(transactional_db, settings):
    settings.FTPSERVER_NODE_NAME = "node-b"
    settings.FTPSERVER_PASSIVE_PORTS = "30000-30010"
    live("node-a", [[30010, 30020]])
    # A database check: nothing without the database.
    assert scaleout.check_passive_ports(databases=None) == []
    issues = checks.run_checks(
        tags=[scaleout.TAG], include_deployment_checks=True, databases=["default"]
    )
    assert [issue.id for issue in issues] == ["ftpserver_core.E060"]
    assert "both would open 30010" in issues[0].msg
    # The command's own options win over the settings.
    options = ServerOptions.from_settings(passive_ports="30021-30030")
    with scaleout.checking(options):
        assert scaleout.check_passive_ports(databases=["default"]) == []


def test_guard_sees_a_node_registered_after_the_checks(transactional_db, settings):
    # Both nodes passed their checks at once; the other registered first.
    settings.FTPSERVER_NODE_NAME = "node-b"
    options = ServerOptions.from_settings(passive_ports="30000-30010")
    server = types.SimpleNamespace(options=options)
    server.state = SharedState(server)
    live("node-a", [[30005, 30006]])
    with pytest.raises(scaleout.Overlap, match="both would open 30005-30006"):
        scaleout.claim(server, options)
    assert server.state.process is None
    assert not ServerProcess.objects.filter(node="node-b").exists()

    # Silenced: the operator knows the nodes are reached apart.
    settings.SILENCED_SYSTEM_CHECKS = ["ftpserver_core.E060"]
    scaleout.claim(server, options).release()


def test_guard_of_a_supervisor_holds_a_row_until_released(transactional_db, settings):
    settings.FTPSERVER_NODE_NAME = "node-b"
    options = ServerOptions.from_settings(passive_ports="30000-30010", workers=2)
    held = scaleout.claim(types.SimpleNamespace(), options)
    row = ServerProcess.objects.get(node="node-b")
    assert row.passive_ports == [[30000, 30010]]
    held.release()
    assert not ServerProcess.objects.filter(node="node-b").exists()
