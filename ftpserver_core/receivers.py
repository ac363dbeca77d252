"""Built-in receivers: every FTP signal becomes an audit record.

They run on the IO loop, so they only build a small dict and hand it to the
audit journal and writer (see ``audit/``); the database is written by
another thread.
Connected in ``FTPServerCoreConfig.ready()``; your own receivers of the same
signals run beside them.
"""

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_delete, pre_save
from django.utils import timezone

from . import audit, signals
from .conf import settings
from .models import (
    AuditEvent,
    DirectoryRule,
    FTPUserAccount,
    FTPUserGroup,
    HomeDirectory,
)

Event = AuditEvent.Event


def session_fields(handler):
    """Return the audit fields every record of a session carries."""
    policy = getattr(handler, "policy", None)
    return {
        "remote_ip": handler.remote_ip or None,
        "remote_port": handler.remote_port or None,
        "session_id": getattr(handler, "session_id", ""),
        "tls": bool(getattr(handler, "tls", False)),
        "account_id": policy.account_id if policy else None,
        "group": (policy.group or "") if policy else "",
    }


def _session_receiver(event, failure="", **extra_fields):
    """Return a receiver that records ``event`` for a session signal.

    ``extra_fields`` maps AuditEvent fields to signal arguments; ``failure``
    marks the event unsuccessful with that reason.
    """
    # Plain text (not the Event member): the writer stores it as it is.
    event = str(event)
    extras = tuple(extra_fields.items())

    def receiver(sender, handler, username=None, **kwargs):
        if not audit.enabled(event):
            return
        record = session_fields(handler)
        record["time"] = audit.now()
        record["event"] = event
        record["username"] = username or ""
        record["node"] = audit.node_name()
        for field, arg in extras:
            value = kwargs.get(arg)
            if value is not None:
                record[field] = value
        if failure:
            record["success"] = False
            record["reason"] = kwargs.get("reason") or failure
        audit.record(record)

    receiver.__name__ = f"audit_{event}"
    receiver.__qualname__ = receiver.__name__
    return receiver


def _login_failed(sender, handler, username=None, reason="", **kwargs):
    if not audit.enabled(Event.LOGIN_FAILED):
        return
    audit.record(
        time=audit.now(),
        event=Event.LOGIN_FAILED,
        username=(username or "")[:150],
        success=False,
        reason=reason or "",
        node=audit.node_name(),
        **session_fields(handler),
    )


def _server_event(event):
    def receiver(sender, server, host, port, **kwargs):
        if audit.enabled(event):
            audit.record(
                time=audit.now(),
                event=event,
                remote_ip=None,
                ftp_path=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
                node=audit.node_name(),
            )

    receiver.__name__ = f"audit_{event}"
    return receiver


def _refused(sender, handler, remote_ip=None, reason="", **kwargs):
    if not audit.enabled(Event.REFUSED):
        return
    audit.record(
        time=audit.now(),
        event=Event.REFUSED,
        success=False,
        reason=reason or "",
        node=audit.node_name(),
        **session_fields(handler),
    )


def _ban_record(event, network, reason, by, remote_ip=None, duration=None):
    return {
        "time": audit.now(),
        "event": event,
        "network": network,
        "reason": reason or "",
        "remote_ip": remote_ip or None,
        "duration": duration,
        # An admin user's action names them; an automatic ban has the node.
        "username": (by or "")[:150],
        "node": audit.node_name(),
    }


def _banned(sender, network, reason="", server=None, by="", **kwargs):
    if not audit.enabled(Event.BAN):
        return
    fields = _ban_record(
        Event.BAN,
        network,
        reason,
        "" if server is not None else by,
        remote_ip=kwargs.get("remote_ip"),
        duration=kwargs.get("duration"),
    )
    if server is not None:
        audit.record(**fields)
    else:
        # From the admin, a web process: no journal there, the row goes in now.
        audit.insert_now(fields)


def _unbanned(sender, network, reason="", by="", **kwargs):
    if audit.enabled(Event.UNBAN):
        fields = _ban_record(Event.UNBAN, network, reason, by)
        if kwargs.get("server") is not None:
            audit.record(**fields)
        else:
            audit.insert_now(fields)


_TRANSFER = {
    "ftp_path": "ftp_path",
    "path": "path",
    "size": "size",
    "duration": "duration",
    "sha256": "sha256",
}
_PATH = {"ftp_path": "ftp_path", "path": "path"}

RECEIVERS = {
    signals.ftp_server_started: _server_event(Event.SERVER_STARTED),
    signals.ftp_server_stopped: _server_event(Event.SERVER_STOPPED),
    signals.ftp_client_connected: _session_receiver(Event.CONNECT),
    signals.ftp_client_disconnected: _session_receiver(Event.DISCONNECT),
    # An anonymous login's e-mail address (its "password") goes in the path
    # field: a login has no path, and the admin searches that field.
    signals.ftp_login: _session_receiver(Event.LOGIN, ftp_path="anonymous_email"),
    signals.ftp_login_failed: _login_failed,
    signals.ftp_logout: _session_receiver(Event.LOGOUT),
    signals.ftp_file_received: _session_receiver(Event.UPLOAD, **_TRANSFER),
    signals.ftp_file_sent: _session_receiver(Event.DOWNLOAD, **_TRANSFER),
    signals.ftp_file_received_incomplete: _session_receiver(
        Event.UPLOAD_INCOMPLETE, failure="incomplete", **_TRANSFER
    ),
    signals.ftp_file_sent_incomplete: _session_receiver(
        Event.DOWNLOAD_INCOMPLETE, failure="incomplete", **_TRANSFER
    ),
    signals.ftp_file_deleted: _session_receiver(Event.DELETE, **_PATH),
    signals.ftp_file_renamed: _session_receiver(
        Event.RENAME,
        ftp_path="ftp_path_from",
        path="path_from",
        ftp_path_to="ftp_path_to",
        path_to="path_to",
    ),
    signals.ftp_directory_created: _session_receiver(Event.MKDIR, **_PATH),
    signals.ftp_directory_deleted: _session_receiver(Event.RMDIR, **_PATH),
    signals.ftp_connection_refused: _refused,
    signals.ftp_address_banned: _banned,
    signals.ftp_address_unbanned: _unbanned,
    signals.ftp_session_terminated: _session_receiver(
        Event.TERMINATED, failure="terminated"
    ),
    signals.ftp_quota_exceeded: _session_receiver(
        Event.QUOTA_EXCEEDED,
        failure="quota",
        ftp_path="ftp_path",
        path="path",
        size="used",
    ),
}


# --- account changes end the account's open sessions (on every process)


def end_sessions(reason, **filters):
    """Ask the live sessions matching ``filters`` to end, wherever they run."""
    if not settings.END_SESSIONS_ON_ACCOUNT_CHANGE:
        return
    from .state import get_backend

    get_backend().request_kick(reason, **filters)


def _account_saved(sender, instance, created=False, raw=False, **kwargs):
    if created or raw:
        return
    if not instance.is_enabled:
        end_sessions("account_disabled", account_id=instance.pk)
    elif instance.expires_at is not None and instance.expires_at <= timezone.now():
        end_sessions("account_expired", account_id=instance.pk)


def _account_deleted(sender, instance, **kwargs):
    end_sessions("account_deleted", account_id=instance.pk)
    # Again once the deletion is committed: a state thread may have written
    # a session of the account meanwhile (rows are written behind logins).
    pk = instance.pk
    transaction.on_commit(lambda: end_sessions("account_deleted", account_id=pk))


def _user_saving(sender, instance, raw=False, **kwargs):
    if raw or instance.pk is None:
        return
    old = (
        sender._default_manager.filter(pk=instance.pk)
        .values_list("password", flat=True)
        .first()
    )
    instance._ftp_password_changed = old is not None and old != instance.password


def _user_saved(sender, instance, created=False, raw=False, **kwargs):
    if created or raw:
        return
    if not getattr(instance, "is_active", True):
        reason = "account_disabled"
    elif getattr(instance, "_ftp_password_changed", False):
        reason = "password_changed"
    else:
        return
    instance._ftp_password_changed = False
    end_sessions(reason, account__user_id=instance.pk)


def _user_deleted(sender, instance, **kwargs):
    end_sessions("account_deleted", account__user_id=instance.pk)


def _policy_changed(sender, **kwargs):
    # Another process sees the change at its state thread's next round.
    from .logincache import clear_all

    clear_all()


def connect():
    """Connect the built-in receivers (idempotent)."""
    for signal, receiver in RECEIVERS.items():
        signal.connect(receiver, dispatch_uid=f"ftpserver_core.{receiver.__name__}")
    user_model = get_user_model()
    uid = "ftpserver_core.end_sessions"
    post_save.connect(_account_saved, sender=FTPUserAccount, dispatch_uid=uid)
    pre_delete.connect(_account_deleted, sender=FTPUserAccount, dispatch_uid=uid)
    pre_save.connect(_user_saving, sender=user_model, dispatch_uid=uid)
    post_save.connect(_user_saved, sender=user_model, dispatch_uid=uid)
    pre_delete.connect(_user_deleted, sender=user_model, dispatch_uid=uid)
    uid = "ftpserver_core.logincache"
    for model in (
        user_model,
        FTPUserAccount,
        FTPUserGroup,
        HomeDirectory,
        DirectoryRule,
    ):
        post_save.connect(_policy_changed, sender=model, dispatch_uid=uid)
        post_delete.connect(_policy_changed, sender=model, dispatch_uid=uid)
