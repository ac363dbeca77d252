"""The deployment files of deploy/: checked by their own tools, and run."""

import ftplib
import json
import os
import pwd
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from configparser import ConfigParser
from pathlib import Path

import pytest

from ftpserver_core.conf import DEFAULTS

from .processes import REPO_ROOT
from .test_commands import free_port

DEPLOY = REPO_ROOT / "deploy"
UNITS = ["ftpserver.service", "ftpadmin-web.service"]
PROGRAMS = {"ftpserver.conf": "ftpserver", "ftpadmin-web.conf": "ftpadmin-web"}
SHUTDOWN_TIMEOUT = DEFAULTS["SHUTDOWN_TIMEOUT"]
# What a stop may take beyond the FTP server's own shutdown timeout: the
# process exits, the last audit batch is written.
MARGIN = 5


# --- parsers -------------------------------------------------------------


def unit_entries(path):
    """Return a unit file's (section, key, value) triples, repeated keys kept."""
    entries, section = [], None
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key.strip(), value.strip()))
    return entries


def unit_values(path, section, key):
    return [v for s, k, v in unit_entries(path) if s == section and k == key]


def unit_value(path, section, key):
    values = unit_values(path, section, key)
    assert len(values) == 1, f"{path.name}: [{section}] {key}= set {len(values)} times"
    return values[0]


def unit_environment(path):
    return dict(
        item.split("=", 1)
        for value in unit_values(path, "Service", "Environment")
        for item in shlex.split(value)
    )


def seconds(text):
    """'20', '20s', '1min' -> seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min|m)?", text.strip())
    assert match, f"not a duration: {text!r}"
    return float(match[1]) * (60 if match[2] in ("min", "m") else 1)


def dockerfile():
    """Return the Dockerfile's instructions as (KEYWORD, arguments) pairs."""
    instructions, current = [], ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments end nothing, even inside a continued line
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        keyword, _, args = (current + stripped).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        current = ""
    return instructions


def dockerfile_env():
    env = {}
    for keyword, args in dockerfile():
        if keyword == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(args))
    return env


def dockerfile_one(keyword):
    args = [a for k, a in dockerfile() if k == keyword]
    assert len(args) == 1, f"{keyword} appears {len(args)} times in the Dockerfile"
    return args[0]


def healthcheck_command():
    """The HEALTHCHECK's CMD (exec form) as a list."""
    options, _, command = dockerfile_one("HEALTHCHECK").partition("CMD ")
    assert "--timeout=" in options and "--interval=" in options
    return json.loads(command)


def compose():
    yaml = pytest.importorskip("yaml")  # PyYAML: the dev extra
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def supervisor(name):
    parser = ConfigParser(interpolation=None)
    assert parser.read(DEPLOY / "supervisor" / name) == [
        str(DEPLOY / "supervisor" / name)
    ]
    return parser[f"program:{PROGRAMS[name]}"]


# --- systemd ---------------------------------------------------------------


def systemd_analyze():
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return path


def runnable_copy(unit, tmp_path, extra=""):
    """The unit as this machine can load it: this venv's ftpadmin, a user
    that exists here (systemd-analyze fails on a missing ExecStart or User)."""
    me = pwd.getpwuid(os.getuid())
    text = (DEPLOY / "systemd" / unit).read_text()
    ftpadmin = Path(sys.executable).parent / "ftpadmin"
    assert ftpadmin.exists(), "the project is not installed in this venv"
    text = text.replace("/opt/ftpsuite/venv/bin/ftpadmin", str(ftpadmin))
    text = re.sub(r"(?m)^User=.*$", f"User={me.pw_name}", text)
    text = re.sub(r"(?m)^Group=.*$", "", text)
    copy = tmp_path / unit
    copy.write_text(text + extra)
    return copy


def verify(path):
    result = subprocess.run(
        [systemd_analyze(), "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, (result.stdout + result.stderr).strip()


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_verify_finds_nothing_to_say(unit, tmp_path):
    returncode, output = verify(runnable_copy(unit, tmp_path))
    assert returncode == 0 and output == "", output


def test_systemd_verify_does_report_an_unknown_directive(tmp_path):
    # What the test above relies on: a misspelt key is printed (verify still
    # exits 0 for it).
    copy = runnable_copy(UNITS[0], tmp_path, extra="\n[Service]\nProtectSytem=strict\n")
    returncode, output = verify(copy)
    assert "Unknown key 'ProtectSytem'" in output, output


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_security_exposure_is_low(unit, tmp_path):
    result = subprocess.run(
        [
            systemd_analyze(),
            "security",
            "--offline=yes",
            str(runnable_copy(unit, tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0 and "offline" in result.stderr:
        pytest.skip(f"systemd-analyze security --offline: {result.stderr.strip()}")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    # 0 (locked down) to 10 (unsafe); 2.2 and 2.1 when written.
    assert float(match[1]) <= 3.0, result.stdout


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_units_confine_the_service(unit):
    path = DEPLOY / "systemd" / unit
    assert unit_value(path, "Service", "Type") == "simple"
    assert unit_value(path, "Service", "User") not in ("", "root", "0")
    assert unit_value(path, "Service", "Restart") == "always"
    assert unit_value(path, "Service", "KillSignal") == "SIGTERM"
    for key, value in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
    ]:
        assert unit_value(path, "Service", key) == value, key
    assert unit_value(path, "Install", "WantedBy") == "multi-user.target"
    # ProtectSystem=strict leaves writable only what is named: the data
    # directory (StateDirectory, with the journal in it) and the homes.
    env = unit_environment(path)
    state = Path("/var/lib") / unit_value(path, "Service", "StateDirectory")
    assert Path(env["FTPADMIN_DATA_DIR"]) == state
    assert state in Path(env["FTPSERVER_AUDIT_JOURNAL_DIR"]).parents
    writable = unit_value(path, "Service", "ReadWritePaths").split()
    assert writable == env["FTPSERVER_HOME_ROOTS"].split(",")
    assert unit_value(path, "Service", "ExecStart").startswith(
        "/opt/ftpsuite/venv/bin/ftpadmin "
    )


def test_port_21_needs_no_root_under_systemd():
    path = DEPLOY / "systemd" / "ftpserver.service"
    assert unit_environment(path)["FTPSERVER_PORT"] == "21"
    assert unit_value(path, "Service", "AmbientCapabilities") == "CAP_NET_BIND_SERVICE"
    assert (
        unit_value(path, "Service", "CapabilityBoundingSet") == "CAP_NET_BIND_SERVICE"
    )
    web = DEPLOY / "systemd" / "ftpadmin-web.service"
    assert unit_value(web, "Service", "CapabilityBoundingSet") == ""
    assert "FTPSERVER_USER" not in unit_environment(path)  # systemd's User= is


# --- stop timeouts --------------------------------------------------------


def stop_timeouts():
    yield (
        "systemd TimeoutStopSec",
        unit_value(
            DEPLOY / "systemd" / "ftpserver.service", "Service", "TimeoutStopSec"
        ),
    )
    yield "supervisor stopwaitsecs", supervisor("ftpserver.conf")["stopwaitsecs"]
    yield (
        "compose stop_grace_period",
        compose()["services"]["ftpserver"]["stop_grace_period"],
    )


def test_stop_timeouts_exceed_the_shutdown_timeout():
    for where, value in stop_timeouts():
        assert seconds(value) >= SHUTDOWN_TIMEOUT + MARGIN, (
            f"{where} {value!r}: the FTP server may take FTPSERVER_SHUTDOWN_TIMEOUT "
            f"({SHUTDOWN_TIMEOUT:g} s) to stop; expected {MARGIN} s more"
        )


# --- supervisor -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_supervisor_programs(name):
    program = supervisor(name)
    assert program["stopsignal"] == "TERM"
    assert program["autorestart"] == "true"
    assert program["autostart"] == "true"
    assert program["killasgroup"] == "true"
    command = shlex.split(program["command"])
    assert command[:2] == ["/bin/sh", "-c"]
    # exec: the server itself gets supervisor's signals, not a shell.
    inner = shlex.split(command[2].rpartition("&& exec ")[2])
    assert inner[0] == "/opt/ftpsuite/venv/bin/ftpadmin"
    assert inner[1] == ("ftpserver" if name == "ftpserver.conf" else "web")
    env = dict(
        item.split("=", 1)
        for item in shlex.split(program["environment"].replace(",", " "))
    )
    assert env["DJANGO_SETTINGS_MODULE"] == "ftpadmin.settings"
    assert (
        Path(env["FTPADMIN_DATA_DIR"])
        in Path(env["FTPSERVER_AUDIT_JOURNAL_DIR"]).parents
    )
    if name == "ftpserver.conf":
        # Started as root for port 21; the server drops to this user.
        assert "user" not in program
        assert env["FTPSERVER_USER"] == "ftpsuite"
        assert seconds(program["stopwaitsecs"]) >= SHUTDOWN_TIMEOUT + MARGIN
    else:
        assert program["user"] == "ftpsuite"


# --- compose --------------------------------------------------------------


def test_compose_services_ports_and_volumes():
    config = compose()
    services = config["services"]
    assert set(services) == {"db", "migrate", "ftpserver", "admin"}
    image_env = dockerfile_env()
    passive = image_env["FTPSERVER_PASSIVE_PORTS"]
    low, high = (int(p) for p in passive.split("-"))
    assert high - low >= 9

    for name in ("ftpserver", "admin", "migrate"):
        service = services[name]
        env = service["environment"]
        for key in (
            "DATABASE_URL",
            "SECRET_KEY",
            "FTPSERVER_PASSIVE_PORTS",
            "FTPSERVER_MASQUERADE_ADDRESS",
        ):
            assert env.get(key), f"{name}: {key} is not set"
        assert env["DATABASE_URL"].startswith("postgres://")
        assert env["DATABASE_URL"].endswith("@db:5432/ftpsuite")
        assert env["FTPSERVER_PASSIVE_PORTS"] == passive
        # One volume for the homes, one for the journal, where the image
        # looks for them.
        assert sorted(service["volumes"]) == sorted(
            [
                f"homes:{image_env['FTPSERVER_HOME_ROOTS']}",
                f"journal:{image_env['FTPSERVER_AUDIT_JOURNAL_DIR']}",
            ]
        )
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert set(config["volumes"]) == {"pgdata", "homes", "journal"}

    ftp = services["ftpserver"]
    assert ftp["command"] == ["ftpserver"]
    assert f"21:{image_env['FTPSERVER_PORT']}" in ftp["ports"]
    assert f"{passive}:{passive}" in ftp["ports"]  # one to one, for PASV
    admin = services["admin"]
    assert admin["command"][0] == "web"
    admin_port = admin["command"][1].rpartition(":")[2]
    assert admin["ports"] == [f"127.0.0.1:{admin_port}:{admin_port}"]
    assert admin_port in dockerfile_one("EXPOSE").split()

    for name in ("db", "ftpserver", "admin"):
        assert services[name]["restart"] in ("always", "unless-stopped"), name
        assert services[name]["healthcheck"]["test"], name
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["command"][0] == "migrate"
    for name in ("ftpserver", "admin"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["db"]["condition"] == "service_healthy"
        assert services[name]["environment"]["FTPADMIN_MIGRATE"] == "0"
    # The FTP server's health check is the image's.
    assert ftp["healthcheck"]["test"] == ["CMD", *healthcheck_command()]
    assert f"http://127.0.0.1:{admin_port}/admin/login/" in " ".join(
        admin["healthcheck"]["test"]
    )


def test_compose_config_validates():
    result = (
        subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if shutil.which("docker")
        else None
    )
    if result is None or result.returncode != 0:
        pytest.skip("no docker compose plugin to validate deploy/compose.yaml with")
    result = subprocess.run(
        ["docker", "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        env={**os.environ, "POSTGRES_PASSWORD": "x", "SECRET_KEY": "y"},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


# --- the Dockerfile -----------------------------------------------------


def test_dockerfile_shape():
    instructions = dockerfile()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    env = dockerfile_env()
    user = dockerfile_one("USER")
    assert user not in ("root", "0")
    groupadd = next(a for k, a in instructions if k == "RUN" and "useradd" in a)
    assert re.search(rf"useradd --system .*--gid {user} .* {user}$", groupadd)
    pip = next(a for k, a in instructions if k == "RUN" and "pip install" in a)
    extras = re.search(r"\[([a-z,]+)\]", pip)[1].split(",")
    assert {"postgres", "tls"} <= set(extras)
    assert any(k == "RUN" and "collectstatic" in a for k, a in instructions)
    exposed = dockerfile_one("EXPOSE").split()
    assert env["FTPSERVER_PORT"] in exposed
    assert env["FTPSERVER_PASSIVE_PORTS"] in exposed
    # The health check asks the FTP process's /health.
    assert env["FTPSERVER_METRICS_ADDRESS"].startswith("127.0.0.1:")
    url = f"http://{env['FTPSERVER_METRICS_ADDRESS']}/health"
    assert healthcheck_command()[:2] == ["python", "-c"]
    assert url in healthcheck_command()[2]
    assert json.loads(dockerfile_one("ENTRYPOINT")) == ["docker-entrypoint.sh"]
    assert json.loads(dockerfile_one("CMD")) == ["ftpserver"]
    assert dockerfile_one("STOPSIGNAL") == "SIGTERM"


# Absolute paths of the image that the emulation below puts under its root.
IMAGE_PATHS = re.compile(r"(?<![\w.:/-])/(?=(?:tmp|data|app|usr/local/bin)(?:/|\b))")


class ImageTree:
    """The Dockerfile's steps run on this machine, the image's / under a
    directory: its COPYs, ENVs and RUNs, with pip installing into a fresh
    venv. The user is not created (the processes run as the test's user)."""

    def __init__(self, root, venv):
        self.root, self.venv = root, venv
        self.env = {}
        self.workdir = root
        self.entrypoint = self.cmd = None
        self.skipped = []

    def path(self, text):
        return IMAGE_PATHS.sub(str(self.root) + "/", text)

    def environ(self, **extra):
        return {
            "PATH": os.pathsep.join(
                [
                    str(self.venv / "bin"),
                    str(self.root / "usr/local/bin"),
                    "/usr/bin",
                    "/bin",
                ]
            ),
            "HOME": str(self.root),
            **self.env,
            **extra,
        }

    def build(self):
        for keyword, args in dockerfile():
            if keyword in ("FROM", "USER", "EXPOSE", "HEALTHCHECK", "STOPSIGNAL"):
                continue  # no file changes (USER: the processes run as ours)
            step = getattr(self, "do_" + keyword.lower(), None)
            assert step, f"the Dockerfile emulation does not know {keyword}"
            step(args)
        return self

    def do_env(self, args):
        for item in shlex.split(args):
            name, _, value = item.partition("=")
            self.env[name] = self.path(value)

    def do_copy(self, args):
        words = [w for w in args.split() if not w.startswith("--chmod")]
        *sources, target = words
        target = Path(self.path(target))
        for source in sources:
            source = REPO_ROOT / source
            destination = target / source.name if args.endswith("/") else target
            destination.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(
                    source, destination, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                shutil.copy2(source, destination)

    def do_run(self, args):
        if args.startswith("groupadd "):
            self.skipped.append(args)
            return
        command = self.path(args)
        command = command.replace(
            "pip install",
            f"{shlex.quote(sys.executable)} -m pip --python "
            f"{shlex.quote(str(self.venv / 'bin' / 'python'))} install -q",
        )
        # The image's user does not exist here.
        command = re.sub(r" -o \S+ -g \S+", "", command)
        result = subprocess.run(
            ["/bin/sh", "-c", command],
            capture_output=True,
            text=True,
            env=self.environ(),
            cwd=self.workdir,
            timeout=300,
        )
        assert result.returncode == 0, f"RUN {args}\n{result.stdout}\n{result.stderr}"

    def do_workdir(self, args):
        self.workdir = Path(self.path(args))
        self.workdir.mkdir(parents=True, exist_ok=True)

    def do_entrypoint(self, args):
        self.entrypoint = json.loads(args)

    def do_cmd(self, args):
        self.cmd = json.loads(args)

    def start(self, command, log, **env):
        """Run the entrypoint with ``command`` as ``docker run`` would."""
        program = shutil.which(self.entrypoint[0], path=self.environ()["PATH"])
        with open(log, "wb") as out:
            return subprocess.Popen(
                [program, *self.entrypoint[1:], *command],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.environ(**env),
                cwd=self.workdir,
            )


def wait_for(predicate, process, log, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        if process.poll() is not None:
            raise AssertionError(
                f"exited with {process.returncode}:\n{Path(log).read_text()}"
            )
        time.sleep(0.2)
    raise AssertionError(f"timed out:\n{Path(log).read_text()}")


def ftp_welcome(port):
    try:
        with ftplib.FTP() as ftp:
            return ftp.connect("127.0.0.1", port, timeout=5)
    except OSError:
        return None


def succeeds(command, env):
    return (
        subprocess.run(command, capture_output=True, env=env, timeout=30).returncode
        == 0
    )


@pytest.mark.slow
def test_dockerfile_steps_make_a_working_server(tmp_path):
    # About 15 s: pip installs the project and its dependencies into a fresh
    # venv (from pip's cache once downloaded), collectstatic, two migrates.
    image = ImageTree(tmp_path / "image", tmp_path / "venv")
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(image.venv)], check=True
    )
    image.build()
    assert [s.split()[0] for s in image.skipped] == ["groupadd"]
    static = Path(image.env["STATIC_ROOT"])
    assert (static / "admin" / "css" / "base.css").is_file()
    assert not (image.root / "tmp" / "build").exists(), "build-time secrets left"
    assert not (image.root / "tmp" / "src").exists()
    journal = Path(image.env["FTPSERVER_AUDIT_JOURNAL_DIR"])
    assert journal.stat().st_mode & 0o777 == 0o700
    # Installed, not run from a checkout: the venv has the package.
    assert list((image.venv / "lib").glob("python3*/site-packages/ftpserver_core"))

    # The FTP server, on ports of this test's own (the image's are fixed).
    # A port found free can be taken by a test running beside this one
    # before the server binds it: then again, with other ports.
    for attempt in range(3):
        port = free_port()
        low = random.randrange(20000, 31000)
        overrides = {
            "FTPSERVER_HOST": "127.0.0.1",
            "FTPSERVER_PORT": str(port),
            "FTPSERVER_PASSIVE_PORTS": f"{low}-{low + 9}",
        }
        # The image's health check, on this test's metrics port.
        metrics = f"127.0.0.1:{free_port()}"
        overrides["FTPSERVER_METRICS_ADDRESS"] = metrics
        health = [
            part.replace(image.env["FTPSERVER_METRICS_ADDRESS"], metrics)
            for part in healthcheck_command()
        ]
        health[0] = str(image.venv / "bin" / "python")
        log = tmp_path / f"ftpserver{attempt}.log"
        server = image.start(image.cmd, log, **overrides)
        try:
            welcome = wait_for(lambda: ftp_welcome(port), server, log)  # noqa: B023
            break
        except AssertionError:
            if attempt == 2 or "That port is already in use." not in log.read_text():
                raise
    try:
        assert welcome.startswith("220 ")
        # The entrypoint migrated the database (SQLite in the data directory).
        assert (Path(image.env["FTPADMIN_DATA_DIR"]) / "ftpsuite.sqlite3").is_file()
        wait_for(lambda: succeeds(health, image.environ()), server, log)
        # exec: SIGTERM reaches the server, which stops cleanly.
        server.send_signal(signal.SIGTERM)
        assert server.wait(SHUTDOWN_TIMEOUT + MARGIN) == 0, log.read_text()
    finally:
        if server.poll() is None:
            server.kill()
    assert "Operations to perform" in log.read_text()

    # The admin finds the image's static files current.
    port = free_port()
    log = tmp_path / "web.log"
    web = image.start(["web", f"127.0.0.1:{port}"], log, FTPADMIN_MIGRATE="0")
    try:
        css = wait_for(
            lambda: fetch_ok(f"http://127.0.0.1:{port}/static/admin/css/base.css"),
            web,
            log,
        )
        assert css == (static / "admin" / "css" / "base.css").read_bytes()
        assert re.search(r"Static files: 0 copied, \d+ unchanged", log.read_text())
        web.send_signal(signal.SIGTERM)
        assert web.wait(20) == 0, log.read_text()
    finally:
        if web.poll() is None:
            web.kill()


def fetch_ok(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (http)
            return response.read() if response.status == 200 else None
    except OSError:
        return None


@pytest.mark.slow
def test_docker_build(tmp_path):
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no Docker: the docker command is not installed")
    info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"no Docker daemon: docker info failed: {reason}")
    tag = f"ftpsuite-test:{os.getpid()}"
    result = subprocess.run(
        [docker, "build", "-f", str(DEPLOY / "Dockerfile"), "-t", tag, str(REPO_ROOT)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        result = subprocess.run(
            [
                docker,
                "run",
                "--rm",
                tag,
                "python",
                "-c",
                "import ftpadmin, waitress, whitenoise",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
    finally:
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True, timeout=120)


# --- the documentation ------------------------------------------------------


def test_deployment_docs_are_plain_restructuredtext_and_name_the_files():
    docutils = pytest.importorskip("docutils.core")
    text = (REPO_ROOT / "docs" / "deployment.rst").read_text()
    docutils.publish_doctree(
        text, settings_overrides={"halt_level": 2, "report_level": 2}
    )
    for name in (
        "deploy/Dockerfile",
        "deploy/compose.yaml",
        "deploy/systemd/ftpserver.service",
        "deploy/systemd/ftpadmin-web.service",
        "deploy/supervisor/ftpserver.conf",
        "ftpadmin web",
        dockerfile_env()["FTPSERVER_PASSIVE_PORTS"],
    ):
        assert name in text, name
