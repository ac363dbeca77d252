"""The standalone suite's settings and quickstart, run as a user runs them."""

import json
import subprocess
import sys

from .processes import REPO_ROOT

READ = (
    "import json, django; django.setup(); "
    "from ftpserver_core.conf import settings as s; "
    "print(json.dumps([s.HOME_ROOTS, s.DEFENDER_SAFELIST, s.DEFENDER_SCORES]))"
)


def run(args, tmp_path, **env):
    return subprocess.run(
        [sys.executable, *args],
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(REPO_ROOT),
            "DJANGO_SETTINGS_MODULE": "ftpadmin.settings",
            "FTPADMIN_DATA_DIR": str(tmp_path / "data"),
            **env,
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_list_and_dict_settings_come_from_the_environment(tmp_path):
    result = run(
        ["-c", READ],
        tmp_path,
        FTPSERVER_HOME_ROOTS="/srv/ftp, /data/ftp",
        FTPSERVER_DEFENDER_SAFELIST="10.0.0.0/8,192.0.2.7",
        FTPSERVER_DEFENDER_SCORES="no_login=0,abuse=5",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        ["/srv/ftp", "/data/ftp"],
        ["10.0.0.0/8", "192.0.2.7"],
        {"no_login": 0, "abuse": 5},
    ]
    unset = run(["-c", READ], tmp_path, FTPSERVER_HOME_ROOTS="none")
    assert unset.returncode == 0, unset.stderr
    assert json.loads(unset.stdout)[0] is None


def test_quickstart_refuses_demo_homes_where_the_server_would_refuse_them(tmp_path):
    # A data directory in a system directory (here /run, as /root or /etc
    # would be): the demo account could never log in.
    data = f"/run/ftpsuite-test-{tmp_path.name}"
    try:
        result = run(
            ["-m", "ftpadmin", "quickstart", "--no-serve"],
            tmp_path,
            FTPADMIN_DATA_DIR=data,
        )
    finally:
        subprocess.run(["rm", "-rf", data], check=False)
    assert result.returncode == 1
    assert "CommandError: The demo homes would be in" in result.stderr
    assert f"FTPSERVER_HOME_ROOTS={data}/ftp" in result.stderr


def test_none_from_the_environment_turns_off_a_numeric_limit(tmp_path):
    read = (
        "import json, django; django.setup(); "
        "from ftpserver_core.conf import settings as s; "
        "print(json.dumps([s.MAX_CONNECTIONS_PER_IP, s.LOGINS_PER_ADDRESS, "
        "s.LISTENERS]))"
    )
    result = run(
        ["-c", read],
        tmp_path,
        FTPSERVER_MAX_CONNECTIONS_PER_IP="none",
        FTPSERVER_LOGINS_PER_ADDRESS="7",
        FTPSERVER_LISTENERS="0.0.0.0:21 0.0.0.0:990,tls=implicit",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        None,
        7,
        "0.0.0.0:21 0.0.0.0:990,tls=implicit",
    ]
