"""Fixtures: a real FTP server on a free port, accounts, clients, a signal recorder."""

import ftplib
import os
import threading
import time

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection

from ftpserver_core import signals
from ftpserver_core.models import (
    DirectoryRule,
    FTPUserAccount,
    FTPUserGroup,
    HomeDirectory,
)
from ftpserver_core.options import ServerOptions
from ftpserver_core.servers import build_server

PASSWORD = "s3cret-Passw0rd"


class LiveServer:
    """A running FTP server in a thread of the test process."""

    def __init__(self, sock=None, **overrides):
        """``sock``: a listening socket to serve on (instead of host:port)."""
        overrides.setdefault("host", "127.0.0.1")
        overrides.setdefault("port", 0)
        self.options = ServerOptions.from_settings(**overrides)
        self.server = build_server(self.options, sock=sock)
        self.host, self.port = self.server.host, self.server.port
        self.thread = threading.Thread(target=self.server.serve, daemon=True)
        self.thread.start()

    def client(self, username=None, password=PASSWORD, tls=False, timeout=10):
        """Return an ftplib client, logged in when ``username`` is given."""
        ftp = ftplib.FTP_TLS(timeout=timeout) if tls else ftplib.FTP(timeout=timeout)
        ftp.connect(self.host, self.port)
        if tls:
            ftp.auth()
        if username is not None:
            ftp.login(username, password)
            if tls:
                ftp.prot_p()
        return ftp

    def stop(self):
        self.server.stop()
        self.thread.join(10)
        assert not self.thread.is_alive(), "FTP server did not stop"


@pytest.fixture
def ftp_server(transactional_db, tmp_path):
    """Start FTP servers on demand: ``ftp_server(**overrides)``; stopped at teardown."""
    started = []

    def start(**overrides):
        live = LiveServer(**overrides)
        started.append(live)
        return live

    yield start
    for live in started:
        live.stop()


@pytest.fixture
def live_ftp(ftp_server):
    """One running plain-FTP server with default options."""
    return ftp_server()


@pytest.fixture
def make_account(transactional_db, tmp_path):
    """Create a Django user + FTP account; the home is ``tmp_path/homes/{username}``."""

    def make(
        username="alice",
        password=PASSWORD,
        permission="elradfmwMT",
        group=None,
        home=None,
        rules=(),
        **account_fields,
    ):
        user_model = get_user_model()
        user = user_model.objects.create_user(username=username, password=password)
        if home is None:
            home = str(tmp_path / "homes" / "{username}")
        home_dir, _ = HomeDirectory.objects.get_or_create(path=home)
        if isinstance(group, str):
            group, _ = FTPUserGroup.objects.get_or_create(name=group)
        account = FTPUserAccount.objects.create(
            user=user,
            group=group,
            home_directory=home_dir,
            permission=permission,
            **account_fields,
        )
        for rule in rules:
            DirectoryRule.objects.create(account=account, **rule)
        account.home_path = home.format(
            username=username, group=group.name if group else ""
        )
        os.makedirs(account.home_path, exist_ok=True)
        return account

    return make


class SignalRecorder:
    """Record every FTP signal sent, with its arguments."""

    def __init__(self):
        self.events = []
        self._cond = threading.Condition()
        self._receivers = {}

    def connect(self):
        for name, signal in signals.ALL_SIGNALS.items():

            def receiver(sender, _name=name, **kwargs):
                with self._cond:
                    self.events.append((_name, sender, kwargs))
                    self._cond.notify_all()

            self._receivers[name] = receiver
            signal.connect(receiver, weak=False)

    def disconnect(self):
        for name, receiver in self._receivers.items():
            signals.ALL_SIGNALS[name].disconnect(receiver)

    def names(self):
        with self._cond:
            return [name for name, _, _ in self.events]

    def of(self, name):
        """Return the kwargs of every ``name`` event, in order."""
        with self._cond:
            return [kwargs for n, _, kwargs in self.events if n == name]

    def wait_for(self, name, count=1, timeout=5):
        """Wait until ``count`` ``name`` events arrived; return their kwargs."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(1 for n, _, _ in self.events if n == name) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"expected {count} {name!r} signal(s), got {self.names()}"
                    )
                self._cond.wait(left)
        return self.of(name)

    def clear(self):
        with self._cond:
            self.events.clear()


@pytest.fixture
def recorder():
    rec = SignalRecorder()
    rec.connect()
    yield rec
    rec.disconnect()


def database_url():
    """Return a DATABASE_URL for the current test database (for subprocesses)."""
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    user = s.get("USER") or "postgres"
    host = s.get("HOST") or "127.0.0.1"
    port = s.get("PORT") or 5432
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{host}:{port}/{s['NAME']}"


@pytest.fixture
def audit_viewer(client, db):
    """A test client logged in as staff whose only permission is viewing the audit."""
    user = get_user_model().objects.create_user("auditor", password="x", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    client.force_login(user)
    return client
