"""Runtime state shared by every server process and node: the database backend's tables.

``ServerProcess`` is one running server process (a prefork worker, a node);
its ``heartbeat_at`` (the database's clock, so nodes' clocks do not matter)
says whether it is alive. Everything it holds (live sessions, quota leases,
its share of the bandwidth) counts only while it heartbeats: a process that
dies leaves no phantom state beyond ``FTPSERVER_STATE_EXPIRY`` seconds.
"""

from django.db import models
from django.utils.translation import gettext_lazy as _

from .accounts import FTPUserAccount


class ServerProcess(models.Model):
    """One running FTP server process."""

    node = models.CharField(_("node"), max_length=150)
    pid = models.PositiveIntegerField(_("process id"))
    started_at = models.DateTimeField(_("started"), auto_now_add=True)
    heartbeat_at = models.DateTimeField(_("last heartbeat"), db_index=True)
    # Active transfers per account and direction ({"7": {"up": 2}}), for
    # the accounts with a bandwidth limit: each process takes its share.
    transfers = models.JSONField(_("active transfers"), default=dict, blank=True)
    # Where its data connections are reached ([[first, last], ...]; empty:
    # any free port): nodes behind one load balancer must not share ports
    # (ftpserver_core.scaleout).
    passive_ports = models.JSONField(_("passive ports"), default=list, blank=True)
    masquerade_address = models.CharField(
        _("masquerade address"), max_length=255, blank=True
    )

    class Meta:
        verbose_name = _("server process")
        verbose_name_plural = _("server processes")

    def __str__(self):
        return f"{self.node}:{self.pid}"


class LiveSession(models.Model):
    """One logged-in FTP session, on whichever process holds it."""

    process = models.ForeignKey(
        ServerProcess,
        models.CASCADE,
        related_name="sessions",
        verbose_name=_("process"),
    )
    session_id = models.CharField(_("session"), max_length=32)
    # Kept when the account is deleted: its session must still be found and
    # ended (ftpserver_core.receivers asks first). A loose link, like the
    # audit's: a state thread writes rows behind the logins, and a row
    # written while the account was being deleted must fail neither write
    # (PostgreSQL checks the key at the deleter's COMMIT).
    account = models.ForeignKey(
        FTPUserAccount,
        models.SET_NULL,
        null=True,
        blank=True,
        db_constraint=False,
        related_name="live_sessions",
        verbose_name=_("account"),
    )
    username = models.CharField(_("username"), max_length=150)
    remote_ip = models.GenericIPAddressField(_("client IP"))
    # The defender's key of the address (an IPv6 client's /64): the
    # per-address limit counts by it.
    address_key = models.CharField(_("client network"), max_length=64, db_index=True)
    tls = models.BooleanField(_("TLS"), default=False)
    connected_at = models.DateTimeField(_("connected since"))
    last_command = models.CharField(_("last command"), max_length=200, blank=True)
    last_command_at = models.DateTimeField(_("last command at"), null=True, blank=True)
    transfer = models.CharField(_("current transfer"), max_length=500, blank=True)
    transfer_bytes = models.PositiveBigIntegerField(_("bytes transferred"), default=0)
    # Set by an admin (or an account change) anywhere; the holding process
    # closes the session within a poll interval.
    kick_reason = models.CharField(_("disconnect requested"), max_length=32, blank=True)
    kick_by = models.CharField(_("disconnect requested by"), max_length=150, blank=True)

    class Meta:
        verbose_name = _("live session")
        verbose_name_plural = _("live sessions")
        ordering = ["-connected_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["process", "session_id"], name="ftpsession_unique"
            )
        ]

    def __str__(self):
        return f"{self.username}@{self.remote_ip} ({self.session_id})"


class QuotaUsage(models.Model):
    """What an account's home holds, as the server counted it."""

    # Loose for the same reason as LiveSession.account; the state thread
    # sweeps rows whose account is gone.
    account = models.OneToOneField(
        FTPUserAccount,
        models.CASCADE,
        primary_key=True,
        db_constraint=False,
        related_name="quota_usage",
        verbose_name=_("account"),
    )
    bytes = models.BigIntegerField(_("bytes used"), default=0)
    files = models.BigIntegerField(_("files"), default=0)
    scanned_at = models.DateTimeField(_("last scanned"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("quota usage")
        verbose_name_plural = _("quota usage")

    def __str__(self):
        return f"{self.account}: {self.bytes} bytes, {self.files} files"


class QuotaLease(models.Model):
    """Room a process has reserved within an account's quota and not used yet."""

    process = models.ForeignKey(
        ServerProcess, models.CASCADE, related_name="leases", verbose_name=_("process")
    )
    account = models.ForeignKey(
        FTPUserAccount,
        models.CASCADE,
        db_constraint=False,  # as QuotaUsage.account
        related_name="+",
        verbose_name=_("account"),
    )
    bytes = models.BigIntegerField(_("bytes"), default=0)
    files = models.BigIntegerField(_("files"), default=0)

    class Meta:
        verbose_name = _("quota lease")
        verbose_name_plural = _("quota leases")
        constraints = [
            models.UniqueConstraint(
                fields=["process", "account"], name="ftpquotalease_unique"
            )
        ]

    def __str__(self):
        return f"{self.process}: {self.bytes} bytes, {self.files} files"
