"""Groups, accounts, home directories and directory rules of the FTP server."""

import ipaddress
import os
import string
from collections.abc import Iterable

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from ..conf import settings as ftpserver_settings

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


# Where a home directory may never be, nor below: the operating system's
# programs, configuration, secrets and kernel interfaces. A group home of /
# once served /etc/shadow.
SYSTEM_DIRECTORIES = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var",
)
# Where FTPSERVER_HOME_ROOTS may name a directory three levels deep or more.
DEEP_ROOTS_ALLOWED = ("/var", "/root")
# Inside those, the one place FTP servers traditionally keep their files.
DATA_DIRECTORIES = ("/var/ftp",)
PLACEHOLDERS = ("username", "group")
HOME_EXAMPLE = "/srv/ftp/{username}"


def template_placeholders(template):
    """Return the placeholder names of ``template`` in order.

    Raise ValueError unless every field is a plain ``{username}`` or
    ``{group}``: str.format would otherwise follow attributes and indexes
    (``{username.__class__}``), convert (``!r``) or pad (``{group:.>2}`` of an
    empty group is ``..``), so what a template renders to could not be
    checked from its text. The error's text completes "Path '...' ".
    """
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(
            f"is not a valid template ({exc}); expected {{username}} and {{group}} "
            "as placeholders and any other brace doubled ({{ or }})"
        ) from None
    names = []
    for _literal, name, spec, conversion in fields:
        if name is None:
            continue
        field = "{" + name + (f"!{conversion}" if conversion else "")
        field += (f":{spec}" if spec else "") + "}"
        if name not in PLACEHOLDERS:
            base = name.replace("[", ".").split(".", 1)[0]
            if base in PLACEHOLDERS:
                raise ValueError(
                    f"has {field}, which reads an attribute or an item of a "
                    "placeholder; expected the plain {username} or {group}"
                )
            raise ValueError(
                f"has an unknown placeholder {field}; expected {{username}} or "
                "{group}"
            )
        if conversion or spec:
            what = f"a conversion (!{conversion})" if conversion else ""
            what += " and " if conversion and spec else ""
            what += f"a format spec (:{spec})" if spec else ""
            raise ValueError(f"has {field}, with {what}; expected the plain {{{name}}}")
        names.append(name)
    return names


def is_inside(path, directory):
    """Return whether the normalised ``path`` is ``directory`` or below it."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def system_directory(path):
    """Return the system directory holding the normalised ``path``, or None."""
    if any(is_inside(path, data) for data in DATA_DIRECTORIES):
        return None
    return next((s for s in SYSTEM_DIRECTORIES if is_inside(path, s)), None)


def home_root_problem(root):
    """Say why ``root`` cannot be one of FTPSERVER_HOME_ROOTS, or return None."""
    try:
        path = os.fspath(root)
    except TypeError:
        path = None
    if not isinstance(path, str):
        return f"{root!r} is not a path; expected a directory such as /srv/ftp"
    if "\x00" in path:
        return f"{path!r} contains a NUL byte; expected a directory such as /srv/ftp"
    if not path.startswith("/"):
        return f"{path!r} is not absolute; expected a path starting with /"
    if path == "/":
        return (
            "'/' is the whole file system; expected a directory for FTP homes, "
            "such as /srv/ftp"
        )
    if "//" in path or os.path.normpath(path) != path:
        return (
            f"{path!r} is not normalised; expected {os.path.normpath(path)!r} "
            "(no '.', '..', '//' nor trailing /)"
        )
    system = system_directory(path)
    # /var/lib/<app>/... is where packaged services keep their data, and a
    # project checked out under root's home (/root/<project>/var/ftp) keeps
    # its own there: a root the operator names at that depth is theirs. The
    # rest of the system directories, and the first levels, never are.
    if system is not None and not (
        system in DEEP_ROOTS_ALLOWED and path.count("/") >= 3
    ):
        return (
            f"{path!r} is the system directory {system!r} or inside it; expected a "
            "data directory such as /srv/ftp, or one of a service's own below "
            "/var such as /var/lib/ftpadmin/homes"
        )
    return None


def home_roots():
    """Return FTPSERVER_HOME_ROOTS as a tuple of paths, or None when unset.

    A bad entry (the system check reports it) is left out, so that a server
    whose checks were silenced refuses homes rather than allowing / itself.
    """
    value = ftpserver_settings.HOME_ROOTS
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return ()
    return tuple(os.fspath(r) for r in value if home_root_problem(r) is None)


def home_location_problem(path, roots):
    """Say why the normalised absolute ``path`` may not hold homes, or None.

    Returns (error code, what is wrong, what is expected). ``roots`` is None
    (no FTPSERVER_HOME_ROOTS) or the directories homes must be inside.
    """
    if path == "/":
        return (
            "unsafe_home",
            "is the root directory /",
            f"a directory such as {HOME_EXAMPLE}",
        )
    if roots is not None and not any(is_inside(path, root) for root in roots):
        return (
            "outside_home_roots",
            f"is outside FTPSERVER_HOME_ROOTS {list(roots)!r}",
            "a directory inside one of them",
        )
    system = None if roots is not None else system_directory(path)
    if system is not None:
        where = "is the" if path == system else "is inside the"
        return (
            "unsafe_home",
            f"{where} system directory {system!r}",
            "a data directory such as /srv/ftp, /home/ftp or /var/ftp, or one "
            "inside FTPSERVER_HOME_ROOTS",
        )
    if path.count("/") == 1:
        # A home directly under / shares everything there, and a placeholder
        # there turns a user named "etc" into /etc.
        return (
            "unsafe_home",
            "is directly under /",
            f"a directory at least two levels deep, such as {HOME_EXAMPLE}",
        )
    return None


def validate_path_template(value):
    """Require a home template that can only render to a safe place.

    {username} and {group} only, each a whole path component; absolute and
    normalised; never /, directly under / nor in a system directory; inside
    FTPSERVER_HOME_ROOTS when set.
    """
    if not isinstance(value, str):
        raise ValidationError(
            _("Path %(value)r is not text; expected e.g. %(example)s."),
            code="invalid_template",
            params={"value": value, "example": HOME_EXAMPLE},
        )
    if "\x00" in value:
        raise ValidationError(_("Path contains a NUL byte."), code="nul")
    try:
        template_placeholders(value)
    except ValueError as exc:
        raise ValidationError(
            _("Path %(value)r %(error)s."),
            code="invalid_template",
            params={"value": value, "error": exc},
        ) from exc
    if not value.startswith("/"):
        raise ValidationError(
            _("Path %(value)r is not absolute; expected a path starting with /."),
            code="relative_home",
            params={"value": value},
        )
    # Placeholders become NUL-delimited markers (NUL is refused above), so a
    # component can be told to hold exactly one placeholder and nothing else.
    marked = value.format(username="\x00username\x00", group="\x00group\x00")
    components = marked.split("/")[1:]
    bad = next((c for c in components if c in ("", ".", "..")), None)
    if value != "/" and bad is not None:
        raise ValidationError(
            _(
                "Path %(value)r is not normalised: it has %(what)s; expected "
                "e.g. %(example)s."
            ),
            code="not_normalised",
            params={
                "value": value,
                "what": f"a {bad!r} component"
                if bad
                else "an empty component (// or a trailing /)",
                "example": HOME_EXAMPLE,
            },
        )
    for component in components:
        if "\x00" in component and component.strip("\x00") not in PLACEHOLDERS:
            shown = component.replace("\x00username\x00", "{username}")
            shown = shown.replace("\x00group\x00", "{group}")
            raise ValidationError(
                _(
                    "Path %(value)r has a placeholder inside a component "
                    "(%(component)r); expected {username} or {group} as a whole "
                    "component, e.g. %(example)s."
                ),
                code="partial_placeholder",
                params={
                    "value": value,
                    "component": shown,
                    "example": HOME_EXAMPLE,
                },
            )
    # Every home the template renders lies at or below its first placeholder
    # component; checking the path up to it covers any name put there. The
    # marker keeps its NULs: no directory name can equal it (a user named
    # "etc" under /, or the one root named like a placeholder).
    first = next((i for i, c in enumerate(components) if "\x00" in c), None)
    fixed = components if first is None else components[: first + 1]
    checked = "/" + "/".join(fixed)
    problem = home_location_problem(checked, home_roots())
    if problem is not None:
        code, reason, expected = problem
        raise ValidationError(
            _("Path %(value)r %(reason)s; expected %(expected)s."),
            code=code,
            params={"value": value, "reason": reason, "expected": expected},
        )


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
        template_placeholders(value)
    except ValueError as exc:
        raise ValidationError(
            _("Rule path %(value)r %(error)s."),
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
    quota_bytes = models.PositiveBigIntegerField(
        _("quota (bytes)"),
        null=True,
        blank=True,
        help_text=_("Bytes the home may hold. Blank: inherit (or no quota)."),
    )
    quota_files = models.PositiveIntegerField(
        _("quota (files)"),
        null=True,
        blank=True,
        help_text=_("Files the home may hold. Blank: inherit (or no quota)."),
    )
    max_upload_size = models.PositiveBigIntegerField(
        _("maximum upload size (bytes)"),
        null=True,
        blank=True,
        help_text=_("Largest file one upload may write. Blank: inherit (or no limit)."),
    )
    upload_rate = models.PositiveBigIntegerField(
        _("upload limit (bytes/s)"),
        null=True,
        blank=True,
        help_text=_(
            "Upload bandwidth shared by all of the account's sessions. "
            "Blank: inherit (or unlimited)."
        ),
    )
    download_rate = models.PositiveBigIntegerField(
        _("download limit (bytes/s)"),
        null=True,
        blank=True,
        help_text=_(
            "Download bandwidth shared by all of the account's sessions. "
            "Blank: inherit (or unlimited)."
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
