"""Groups, accounts, home directories and directory rules of the FTP server."""

import ipaddress

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

PERMISSION_LETTERS = "elradfmwMT"
PERMISSION_HELP = _(
    "pyftpdlib letters: e (change directory), l (list), r (download), "
    "a (append), d (delete), f (rename), m (make directory), w (upload), "
    "M (chmod), T (set modification time)."
)


def validate_permission(value):
    """Reject letters outside ``elradfmwMT`` and repeated letters."""
    bad = sorted({ch for ch in value if ch not in PERMISSION_LETTERS})
    if bad:
        raise ValidationError(
            _(
                "Unknown permission letter(s) %(bad)s in %(value)r; expected letters "
                "from %(letters)s."
            ),
            code="invalid_permission",
            params={
                "bad": ", ".join(repr(c) for c in bad),
                "value": value,
                "letters": PERMISSION_LETTERS,
            },
        )
    if len(set(value)) != len(value):
        raise ValidationError(
            _("Permission %(value)r repeats a letter."),
            code="repeated_permission",
            params={"value": value},
        )


def validate_networks(value):
    """Accept a blank value or IP networks separated by commas or whitespace."""
    for item in parse_networks(value, strict=False):
        if isinstance(item, str):
            raise ValidationError(
                _(
                    "%(item)r is not an IP network; expected e.g. 192.0.2.0/24 or "
                    "2001:db8::/32."
                ),
                code="invalid_network",
                params={"item": item},
            )


def parse_networks(value, strict=True):
    """Return the networks in ``value``; with strict=False, bad items as strings."""
    result = []
    for item in value.replace(",", " ").split():
        try:
            result.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            if strict:
                raise
            result.append(item)
    return tuple(result)


def validate_path_template(value):
    """Require an absolute path whose placeholders are {username} and {group}."""
    try:
        value.format(username="u", group="g")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValidationError(
            _(
                "Path %(value)r has an unknown placeholder (%(error)s); use {username} "
                "and {group}."
            ),
            code="invalid_template",
            params={"value": value, "error": exc},
        ) from exc
    if not value.startswith("/"):
        raise ValidationError(
            _("Path %(value)r is not absolute; expected a path starting with /."),
            code="relative_home",
            params={"value": value},
        )
    if "\x00" in value:
        raise ValidationError(_("Path contains a NUL byte."), code="nul")


def validate_rule_path(value):
    """Require a relative sub-path that stays inside the home directory."""
    parts = [p for p in value.strip("/").split("/") if p not in ("", ".")]
    if not parts:
        raise ValidationError(
            _(
                "Rule path %(value)r names the home directory itself; expected a "
                "sub-directory such as 'incoming'."
            ),
            code="rule_is_home",
            params={"value": value},
        )
    if ".." in parts or "\x00" in value:
        raise ValidationError(
            _("Rule path %(value)r leaves the home directory; '..' is not allowed."),
            code="rule_escapes",
            params={"value": value},
        )
    try:
        value.format(username="u", group="g")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValidationError(
            _(
                "Rule path %(value)r has an unknown placeholder (%(error)s); use "
                "{username} and {group}."
            ),
            code="invalid_template",
            params={"value": value, "error": exc},
        ) from exc


class AccessLimits(models.Model):
    """Limits an account or a group may set; blank on an account means inherit."""

    require_tls = models.BooleanField(
        _("require TLS"),
        null=True,
        blank=True,
        help_text=_("Refuse logins over plain FTP. Blank: inherit."),
    )
    max_sessions = models.PositiveIntegerField(
        _("maximum sessions"),
        null=True,
        blank=True,
        help_text=_("Concurrent sessions allowed. Blank: inherit (or no limit)."),
    )
    allowed_networks = models.TextField(
        _("allowed networks"),
        blank=True,
        validators=[validate_networks],
        help_text=_(
            "Client networks allowed to log in, e.g. 192.0.2.0/24 "
            "2001:db8::/32. Blank: inherit (or anywhere)."
        ),
    )

    class Meta:
        abstract = True


class HomeDirectory(models.Model):
    """A home directory path template that accounts and groups share."""

    path = models.CharField(
        _("path"),
        max_length=1024,
        unique=True,
        validators=[validate_path_template],
        help_text=_("Absolute path; {username} and {group} are replaced at login."),
    )
    name = models.CharField(_("name"), max_length=100, blank=True)
    create_on_login = models.BooleanField(
        _("create on first login"),
        default=True,
        help_text=_("Create the directory when it is missing at login."),
    )
    description = models.TextField(_("description"), blank=True)

    class Meta:
        verbose_name = _("home directory")
        verbose_name_plural = _("home directories")
        ordering = ["path"]

    def __str__(self):
        return self.name or self.path


class FTPUserGroup(AccessLimits):
    """A group of FTP accounts sharing permissions and a home directory."""

    name = models.CharField(_("name"), max_length=150, unique=True)
    permission = models.CharField(
        _("permission"),
        max_length=10,
        default="elr",
        validators=[validate_permission],
        help_text=PERMISSION_HELP,
    )
    home_directory = models.ForeignKey(
        HomeDirectory,
        models.PROTECT,
        null=True,
        blank=True,
        related_name="groups",
        verbose_name=_("home directory"),
    )
    description = models.TextField(_("description"), blank=True)

    class Meta:
        verbose_name = _("FTP group")
        verbose_name_plural = _("FTP groups")
        ordering = ["name"]

    def __str__(self):
        return self.name


class FTPUserAccount(AccessLimits):
    """The FTP side of one Django user."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        models.CASCADE,
        related_name="ftp_account",
        verbose_name=_("user"),
    )
    group = models.ForeignKey(
        FTPUserGroup,
        models.PROTECT,
        null=True,
        blank=True,
        related_name="accounts",
        verbose_name=_("group"),
    )
    home_directory = models.ForeignKey(
        HomeDirectory,
        models.PROTECT,
        null=True,
        blank=True,
        related_name="accounts",
        verbose_name=_("home directory"),
        help_text=_("Blank: the group's home directory."),
    )
    permission = models.CharField(
        _("permission"),
        max_length=10,
        blank=True,
        validators=[validate_permission],
        help_text=_("Blank: the group's permission. ") + PERMISSION_HELP,
    )
    is_enabled = models.BooleanField(_("enabled"), default=True)
    expires_at = models.DateTimeField(
        _("expires at"),
        null=True,
        blank=True,
        help_text=_("No login from this time on. Blank: never expires."),
    )
    last_login_at = models.DateTimeField(_("last FTP login"), null=True, blank=True)
    last_login_ip = models.GenericIPAddressField(
        _("last FTP login IP"),
        null=True,
        blank=True,
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("FTP account")
        verbose_name_plural = _("FTP accounts")
        ordering = ["user_id"]

    def __str__(self):
        return self.get_username()

    def get_username(self):
        """Return the login name (the user model's USERNAME_FIELD)."""
        return self.user.get_username()


class DirectoryRule(models.Model):
    """Permissions for one sub-directory of a home (pyftpdlib's override_perm).

    A rule belongs to exactly one of a home directory, a group or an account.
    """

    home_directory = models.ForeignKey(
        HomeDirectory,
        models.CASCADE,
        null=True,
        blank=True,
        related_name="rules",
        verbose_name=_("home directory"),
    )
    group = models.ForeignKey(
        FTPUserGroup,
        models.CASCADE,
        null=True,
        blank=True,
        related_name="rules",
        verbose_name=_("group"),
    )
    account = models.ForeignKey(
        FTPUserAccount,
        models.CASCADE,
        null=True,
        blank=True,
        related_name="rules",
        verbose_name=_("account"),
    )
    path = models.CharField(
        _("path"),
        max_length=1024,
        validators=[validate_rule_path],
        help_text=_("Sub-directory of the home, e.g. 'incoming' or 'pub/{username}'."),
    )
    permission = models.CharField(
        _("permission"),
        max_length=10,
        blank=True,
        validators=[validate_permission],
        help_text=PERMISSION_HELP,
    )
    recursive = models.BooleanField(
        _("recursive"),
        default=False,
        help_text=_(
            "Also apply to every directory below. Otherwise the rule "
            "covers the directory and the files directly in it."
        ),
    )

    class Meta:
        verbose_name = _("directory rule")
        verbose_name_plural = _("directory rules")
        ordering = ["path"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(
                        home_directory__isnull=False,
                        group__isnull=True,
                        account__isnull=True,
                    )
                    | Q(
                        home_directory__isnull=True,
                        group__isnull=False,
                        account__isnull=True,
                    )
                    | Q(
                        home_directory__isnull=True,
                        group__isnull=True,
                        account__isnull=False,
                    )
                ),
                name="directoryrule_one_owner",
                violation_error_message=_(
                    "A directory rule belongs to exactly one of a home directory, "
                    "a group or an account."
                ),
            ),
        ]

    def __str__(self):
        return f"{self.path}: {self.permission or '-'}{' (recursive)' if self.recursive else ''}"
