"""The defender's rows: bans, and the networks never or always refused.

The FTP server keeps an in-memory copy of both and enforces it at accept time
(``ftpserver_core.defender``); the admin edits them here.
"""

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


def normalize_network(value):
    """Return ``value`` (an address or a CIDR network) as a network string.

    An IPv4-mapped IPv6 address counts as its IPv4 address. Raise
    ValidationError quoting the value when it is neither.
    """
    from ..defender.addresses import network_of

    text = str(value).strip()
    try:
        network = network_of(text)
    except ValueError:
        raise ValidationError(
            _(
                "%(value)r is not an IP address or network; expected e.g. "
                "203.0.113.7, 198.51.100.0/24 or 2001:db8::/64."
            ),
            code="invalid_network",
            params={"value": text},
        ) from None
    return str(network)


def validate_network(value):
    """Reject what is not an IP address or CIDR network."""
    normalize_network(value)


class NetworkNormalized(models.Model):
    """Store ``network`` in one form: ``203.0.113.7`` as ``203.0.113.7/32``."""

    class Meta:
        abstract = True

    def clean(self):
        super().clean()
        if self.network:
            try:
                self.network = normalize_network(self.network)
            except ValidationError:
                pass  # the field's validator reports it (once)


class BanQuerySet(models.QuerySet):
    def active(self, now=None):
        """Bans not lifted and not expired."""
        now = now or timezone.now()
        return self.filter(lifted_at__isnull=True).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        )


class Ban(NetworkNormalized):
    """An address or network refused until the ban expires or is lifted."""

    class Reason(models.TextChoices):
        FAILED_LOGINS = "failed_logins", _("failed logins")
        NO_LOGIN = "no_login", _("connections without login")
        ABUSE = "abuse", _("protocol abuse")
        LIMITS = "limits", _("connection limits exceeded")
        MANUAL = "manual", _("manual")

    network = models.CharField(
        _("address or network"),
        max_length=64,
        validators=[validate_network],
        help_text=_(
            "An IP address or CIDR network, e.g. 203.0.113.7 or 2001:db8::/64."
        ),
    )
    reason = models.CharField(
        _("reason"), max_length=24, choices=Reason.choices, default=Reason.MANUAL
    )
    note = models.TextField(_("note"), blank=True)
    created_at = models.DateTimeField(_("banned at"), default=timezone.now)
    expires_at = models.DateTimeField(
        _("expires at"), null=True, blank=True, help_text=_("Blank: never expires.")
    )
    lifted_at = models.DateTimeField(_("lifted at"), null=True, blank=True)
    lifted_by = models.CharField(_("lifted by"), max_length=150, blank=True)
    # Who banned: an admin user's name, or the server node for automatic bans.
    created_by = models.CharField(_("banned by"), max_length=255, blank=True)
    offence = models.PositiveIntegerField(
        _("offence"),
        default=1,
        help_text=_("How many times the network was banned, this ban included."),
    )
    score = models.PositiveIntegerField(_("score"), null=True, blank=True)
    # What the servers poll for: every change moves it forward.
    changed_at = models.DateTimeField(_("changed at"), auto_now=True, db_index=True)

    objects = BanQuerySet.as_manager()

    class Meta:
        verbose_name = _("ban")
        verbose_name_plural = _("bans")
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["network", "created_at"], name="ftpban_net")]

    def __str__(self):
        return f"{self.network} ({self.get_reason_display()})"

    def is_active(self, now=None):
        """True when neither lifted nor expired."""
        now = now or timezone.now()
        if self.lifted_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now


class NetworkRule(NetworkNormalized):
    """A network the defender never bans (safelist) or always refuses (blocklist)."""

    class Kind(models.TextChoices):
        SAFELIST = "safelist", _("safelist: never banned")
        BLOCKLIST = "blocklist", _("blocklist: always refused")

    network = models.CharField(
        _("address or network"),
        max_length=64,
        validators=[validate_network],
        help_text=_("An IP address or CIDR network, e.g. 198.51.100.0/24."),
    )
    kind = models.CharField(_("list"), max_length=16, choices=Kind.choices)
    note = models.CharField(_("note"), max_length=255, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    changed_at = models.DateTimeField(_("changed at"), auto_now=True)

    class Meta:
        verbose_name = _("network rule")
        verbose_name_plural = _("safelist and blocklist")
        ordering = ["kind", "network"]
        constraints = [
            models.UniqueConstraint(
                fields=["network", "kind"], name="ftpnetworkrule_unique"
            )
        ]

    def __str__(self):
        return f"{self.network} ({self.kind})"
