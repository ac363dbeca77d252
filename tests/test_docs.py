"""The documentation site: built with warnings as errors, complete, examples run."""

import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ftpserver_core import signals
from ftpserver_core.conf import DEFAULTS

pytest.importorskip("sphinx")
pytest.importorskip("furo")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CHECK_ID = re.compile(r"""["'](ftpserver_core\.[CEWI]\d{3})["']""")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Build the site once, as CI does: every warning fails the build."""
    out = tmp_path_factory.mktemp("docs-html")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
        + ["-d", str(out / ".doctrees"), str(DOCS), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The build's time, for the record (-rP shows it); about 4 s on 2 cores.
    print(f"sphinx -b html took {time.monotonic() - started:.1f} s")
    return out


def page(site, name):
    return (site / f"{name}.html").read_text()


def text(html):
    """Return the text of ``html``, without its tags (highlighting splits words)."""
    return re.sub(r"<[^>]+>", "", html)


def test_every_setting_of_conf_py_has_an_entry(site):
    html = page(site, "settings")
    missing = [
        name for name in DEFAULTS if f'id="setting-FTPSERVER_{name}"' not in html
    ]
    assert not missing, missing


def test_every_check_id_of_the_code_is_documented(site):
    used = set()
    for package in ("ftpserver_core", "ftpadmin"):
        for path in (ROOT / package).rglob("*.py"):
            used.update(CHECK_ID.findall(path.read_text()))
    assert "ftpserver_core.E001" in used and "ftpserver_core.W001" in used
    html = page(site, "checks")
    assert not [check_id for check_id in sorted(used) if check_id not in html]


def test_every_signal_and_reason_is_on_the_signals_page(site):
    html = page(site, "signals")
    for name in signals.ALL_SIGNALS:
        assert f'<section id="{name.replace("_", "-")}">' in html, name
    for tuple_name in (
        "LOGIN_FAILURE_REASONS",
        "CONNECTION_REFUSAL_REASONS",
        "TRANSFER_FAILURE_REASONS",
        "TERMINATION_REASONS",
        "QUOTA_REASONS",
    ):
        for reason in getattr(signals, tuple_name):
            assert f'<span class="pre">{reason}</span>' in html, reason


def test_every_management_command_has_its_help(site):
    html = page(site, "commands")
    names = [
        path.stem
        for path in ROOT.glob("*/management/commands/*.py")
        if not path.stem.startswith("_")
    ]
    assert "ftpserver" in names and "quickstart" in names
    for name in names:
        assert f'id="command-{name}"' in html, name
    assert "--passive-ports PASSIVE_PORTS" in html


def test_the_index_has_the_readme_commands_and_the_admin_its_screenshots(site):
    readme = (ROOT / "README.rst").read_text()
    quickstart = next(
        line for line in readme.splitlines() if "ftpadmin quickstart" in line
    )
    tests = next(line for line in readme.splitlines() if "pytest -n 2" in line)
    html = text(page(site, "index")).replace("&amp;", "&")
    assert quickstart.strip() in html and tests.strip() in html
    admin = page(site, "admin")
    shown = re.findall(
        r"^\.\. image:: screenshots/(\S+)$", (DOCS / "admin.rst").read_text(), re.M
    )
    assert len(shown) >= 4
    for name in shown:
        assert f'src="_images/{name}"' in admin, name
        assert (site / "_images" / name).is_file()


def python_blocks(rst):
    """Return the ``.. code-block:: python`` blocks of an rst file."""
    blocks = []
    lines = rst.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() == ".. code-block:: python":
            body = []
            for following in lines[i + 2 :]:
                if following.strip() and not following.startswith("    "):
                    break
                body.append(following)
            blocks.append(textwrap.dedent("\n".join(body)))
    return blocks


RUN_EXAMPLES = """
import logging, os, sys
sys.path[:0] = [{root!r}, {ext!r}]
os.environ["DJANGO_SETTINGS_MODULE"] = "docs_settings"
import django
django.setup()
from ftpserver_core import receivers, signals
from ftpserver_core.handlers import DjangoFTPHandler
# Only the reader's receivers: the built-in audit ones need a real session.
for signal, receiver in receivers.RECEIVERS.items():
    signal.disconnect(dispatch_uid=f"ftpserver_core.{{receiver.__name__}}")
logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s", stream=sys.stdout)
namespaces = []
for number, block in enumerate({blocks!r}):
    namespace = {{"__name__": f"example{{number}}"}}
    exec(compile(block, f"example{{number}}", "exec"), namespace)
    namespaces.append(namespace)
common = dict(handler=None, username="alice", remote_ip="192.0.2.7", remote_port=50000,
              session_id="s1", tls=False)
def send(signal, **kwargs):
    for receiver, result in signal.send_robust(sender=DjangoFTPHandler, **{{**common, **kwargs}}):
        if isinstance(result, Exception):
            raise result
send(signals.ftp_login)
send(signals.ftp_login_failed, reason="bad_credentials")
send(signals.ftp_logout)
send(signals.ftp_file_received, path="/srv/ftp/alice/a.txt", ftp_path="/a.txt", size=5,
     duration=0.1, sha256="")
send(signals.ftp_file_deleted, path="/srv/ftp/alice/a.txt", ftp_path="/a.txt")
send(signals.ftp_quota_exceeded, path="/srv/ftp/alice/b", ftp_path="/b",
     reason="quota_bytes", limit=10, used=11)
for result in signals.ftp_address_banned.send_robust(
    sender=DjangoFTPHandler, network="192.0.2.7/32", reason="failed_logins",
    remote_ip="192.0.2.7", expires_at=None, duration=None, offence=1, score=15, by="node1",
):
    if isinstance(result[1], Exception):
        raise result[1]
assert any("uploads" in namespace for namespace in namespaces)
print("examples done")
"""


def test_the_signal_examples_run():
    """Each example of the signals page, as a reader pastes it, with real signals."""
    blocks = python_blocks(DOCS / "signals.rst")
    assert len(blocks) >= 5
    for block in blocks:
        compile(block, "signals.rst", "exec")
    # Those importing an app of the reader's (myapp) only compile; settings
    # fragments (LOGGING, FTPSERVER_*) are run too: they are plain assignments.
    runnable = [block for block in blocks if "myapp" not in block]
    script = RUN_EXAMPLES.format(
        root=str(ROOT), ext=str(DOCS / "_ext"), blocks=runnable
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "ftp.access FTP login: user=alice, ip=192.0.2.7" in out
    assert "FTP login failed: user=alice, ip=192.0.2.7, reason=bad_credentials" in out
    assert "alice deleted /a.txt without TLS" in out
    assert "alice: quota_bytes (limit 10, used 11)" in out
    assert out.rstrip().endswith("examples done")
