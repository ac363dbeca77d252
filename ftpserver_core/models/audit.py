"""The audit trail: one row per FTP event."""

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from .accounts import FTPUserAccount


class AuditEvent(models.Model):
    """One FTP event, as written by the built-in receivers."""

    class Event(models.TextChoices):
        SERVER_STARTED = "server_started", _("server started")
        SERVER_STOPPED = "server_stopped", _("server stopped")
        CONNECT = "connect", _("connect")
        DISCONNECT = "disconnect", _("disconnect")
        LOGIN = "login", _("login")
        LOGIN_FAILED = "login_failed", _("login failed")
        LOGOUT = "logout", _("logout")
        UPLOAD = "upload", _("upload")
        DOWNLOAD = "download", _("download")
        UPLOAD_INCOMPLETE = "upload_incomplete", _("upload (incomplete)")
        DOWNLOAD_INCOMPLETE = "download_incomplete", _("download (incomplete)")
        DELETE = "delete", _("delete")
        RENAME = "rename", _("rename")
        MKDIR = "mkdir", _("make directory")
        RMDIR = "rmdir", _("remove directory")
        REFUSED = "refused", _("connection refused")
        BAN = "ban", _("ban")
        UNBAN = "unban", _("ban lifted")
        TERMINATED = "terminated", _("session terminated")
        QUOTA_EXCEEDED = "quota_exceeded", _("quota exceeded")

    TRANSFERS = (
        Event.UPLOAD,
        Event.DOWNLOAD,
        Event.UPLOAD_INCOMPLETE,
        Event.DOWNLOAD_INCOMPLETE,
    )

    time = models.DateTimeField(_("time"))
    event = models.CharField(_("event"), max_length=24, choices=Event.choices)
    username = models.CharField(_("username"), max_length=150, blank=True)
    # Kept as a loose link: records outlive accounts, and a record must be
    # insertable even if its account was deleted a moment before.
    account = models.ForeignKey(
        FTPUserAccount,
        models.SET_NULL,
        null=True,
        blank=True,
        db_constraint=False,
        related_name="+",
        verbose_name=_("account"),
    )
    group = models.CharField(_("group"), max_length=150, blank=True)
    remote_ip = models.GenericIPAddressField(_("client IP"), null=True, blank=True)
    remote_port = models.PositiveIntegerField(_("client port"), null=True, blank=True)
    session_id = models.CharField(_("session"), max_length=32, blank=True)
    ftp_path = models.TextField(_("path"), blank=True)
    path = models.TextField(_("real path"), blank=True)
    ftp_path_to = models.TextField(_("renamed to"), blank=True)
    path_to = models.TextField(_("real path renamed to"), blank=True)
    size = models.BigIntegerField(_("bytes"), null=True, blank=True)
    duration = models.FloatField(_("duration (s)"), null=True, blank=True)
    success = models.BooleanField(_("success"), default=True)
    reason = models.CharField(_("failure reason"), max_length=64, blank=True)
    tls = models.BooleanField(_("TLS"), default=False)
    node = models.CharField(_("server node"), max_length=255, blank=True)
    # SHA-256 of the file as it streamed (uploads, and downloads whose bytes
    # passed through the server or whose digest it knew).
    sha256 = models.CharField(_("SHA-256"), max_length=64, blank=True)
    # The address or network of a ban or of a lifted ban (CIDR).
    network = models.CharField(_("network"), max_length=64, blank=True)
    # Set by the journal: a record read back after a crash is never
    # inserted twice.
    uid = models.UUIDField(_("record id"), unique=True, null=True, editable=False)

    class Meta:
        verbose_name = _("audit event")
        verbose_name_plural = _("audit events")
        ordering = ["-time", "-id"]
        indexes = [
            models.Index(fields=["time"], name="ftpaudit_time"),
            models.Index(fields=["username", "time"], name="ftpaudit_user_time"),
            models.Index(fields=["event", "time"], name="ftpaudit_event_time"),
            models.Index(fields=["remote_ip", "time"], name="ftpaudit_ip_time"),
            models.Index(fields=["session_id", "time"], name="ftpaudit_session_time"),
            models.Index(fields=["group", "time"], name="ftpaudit_group_time"),
            # Failures are few: a partial index makes "failed only" instant.
            models.Index(
                fields=["time"], condition=Q(success=False), name="ftpaudit_failed_time"
            ),
        ]

    def __str__(self):
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.event} {self.username}"
