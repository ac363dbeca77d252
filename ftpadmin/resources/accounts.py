"""FTP accounts in and out of CSV and XLSX: the bulk import and export.

Columns: ``username``, ``email``, ``group`` (a group's name), ``home_directory``
(a home directory's path), ``permission``, ``is_enabled``, ``expires_at``,
``require_tls``, ``max_sessions``, ``allowed_networks``, ``quota_bytes``,
``quota_files``, ``max_upload_size``, ``upload_rate``, ``download_rate``
(whole numbers of bytes, files and bytes per second; blank inherits the
group's), ``password``.

- A row whose username has an FTP account updates it; otherwise it creates
  one, for the Django user of that name, created too when missing.
- Groups and home directories must exist: an unknown name or path is an error
  of the row, never created on the fly; so is a home directory whose path the
  validators refuse (one saved before they did).
- Only a superuser may give an existing staff user or superuser an account:
  their FTP password would be their admin password.
- ``password``: blank keeps an existing user's password (a new user needs
  one); a Django password hash (``identify_hasher`` knows its algorithm) is
  stored as it is; anything else is a plain-text password, checked by
  ``AUTH_PASSWORD_VALIDATORS`` and hashed with ``set_password``. Plain
  passwords are never stored, and are masked in the error table.
- The export leaves ``password`` empty: a hash is a secret too, and an empty
  cell re-imports as "keep the password".
"""

import re
from collections import defaultdict

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.hashers import identify_hasher
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from import_export import fields, resources

from ftpadmin.forms import (
    ACCOUNT_FIELDS,
    ATTACH_STAFF_ERROR,
    may_attach_account,
    may_manage_user,
    username_taken,
    validate_new_username,
)
from ftpserver_core.models import (
    FTPUserAccount,
    FTPUserGroup,
    HomeDirectory,
    validate_path_template,
)

from .widgets import (
    CountWidget,
    IsoDateTimeWidget,
    LookupWidget,
    StrictBooleanWidget,
    TextWidget,
    text,
)

# "algorithm$...": the shape of every Django password hash.
_HASH_SHAPE = re.compile(r"^[a-z0-9_]+\$\S*\$\S+$")
MASK = "********"


class FTPUserAccountResource(resources.ModelResource):
    """Accounts with their Django user; see the module's docstring for the rules."""

    # username, email and password belong to the Django user: import_instance
    # reads them from the row (readonly here keeps import-export's generic
    # Field.save away from them).
    username = fields.Field(column_name="username", readonly=True)
    email = fields.Field(column_name="email", readonly=True)
    group = fields.Field(
        attribute="group",
        column_name="group",
        widget=LookupWidget(
            FTPUserGroup, "name", expected=gettext_lazy("the name of an FTP group")
        ),
    )
    home_directory = fields.Field(
        attribute="home_directory",
        column_name="home_directory",
        widget=LookupWidget(
            HomeDirectory,
            "path",
            expected=gettext_lazy("the path of a home directory"),
        ),
    )
    permission = fields.Field(
        attribute="permission", column_name="permission", widget=TextWidget()
    )
    # Blank: a new account is enabled, an existing one keeps its flag.
    is_enabled = fields.Field(
        attribute="is_enabled",
        column_name="is_enabled",
        widget=StrictBooleanWidget(),
        saves_null_values=False,
    )
    expires_at = fields.Field(
        attribute="expires_at", column_name="expires_at", widget=IsoDateTimeWidget()
    )
    require_tls = fields.Field(
        attribute="require_tls", column_name="require_tls", widget=StrictBooleanWidget()
    )
    max_sessions = fields.Field(
        attribute="max_sessions", column_name="max_sessions", widget=CountWidget()
    )
    allowed_networks = fields.Field(
        attribute="allowed_networks",
        column_name="allowed_networks",
        widget=TextWidget(),
    )
    quota_bytes = fields.Field(
        attribute="quota_bytes", column_name="quota_bytes", widget=CountWidget()
    )
    quota_files = fields.Field(
        attribute="quota_files", column_name="quota_files", widget=CountWidget()
    )
    max_upload_size = fields.Field(
        attribute="max_upload_size",
        column_name="max_upload_size",
        widget=CountWidget(),
    )
    upload_rate = fields.Field(
        attribute="upload_rate", column_name="upload_rate", widget=CountWidget()
    )
    download_rate = fields.Field(
        attribute="download_rate", column_name="download_rate", widget=CountWidget()
    )
    password = fields.Field(column_name="password", readonly=True)

    class Meta:
        model = FTPUserAccount
        name = gettext_lazy("FTP accounts")
        fields = ("username", "email", *ACCOUNT_FIELDS, "password")
        export_order = fields
        import_id_fields = ("username",)
        use_transactions = True
        clean_model_instances = True
        skip_unchanged = True
        report_skipped = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.user_model = get_user_model()
        self.username_field = self.user_model.USERNAME_FIELD
        email_name = self.user_model.get_email_field_name()
        self.email_field = next(
            (f for f in self.user_model._meta.fields if f.name == email_name), None
        )
        # The import preview (and skip_unchanged) read a field through its
        # attribute, not through dehydrate_*: point both at the user.
        self.fields["username"].attribute = f"user__{self.username_field}"
        if self.email_field is not None:
            self.fields["email"].attribute = f"user__{self.email_field.name}"
        self._rows_of = {}
        self._passwords = {}

    # --- export

    def filter_export(self, queryset, **kwargs):
        return queryset.select_related("user", "group", "home_directory")

    def dehydrate_username(self, account):
        user = getattr(account, "user", None)
        return user.get_username() if user is not None else ""

    def dehydrate_email(self, account):
        user = getattr(account, "user", None)
        if user is None or self.email_field is None:
            return ""
        return getattr(user, self.email_field.name) or ""

    def dehydrate_password(self, account):
        # Never exported: not even the hash (see the module's docstring).
        return ""

    # --- import

    def before_import(self, dataset, **kwargs):
        # Each username once per file: a second row would silently overwrite
        # the first one's values.
        self._rows_of = defaultdict(list)
        if dataset.headers and "username" in dataset.headers:
            column = dataset.headers.index("username")
            for number, data_row in enumerate(dataset, 1):
                self._rows_of[text(data_row[column])].append(number)

    def before_import_row(self, row, **kwargs):
        # Keep the password aside and mask it in the row, which import-export
        # shows in its table of invalid rows.
        raw = text(row.get("password"))
        self._passwords[kwargs.get("row_number")] = raw
        if raw:
            row["password"] = MASK

    def get_instance(self, instance_loader, row):
        username = text(row.get("username"))
        if not username:
            return None
        return (
            FTPUserAccount.objects.select_related("user", "group", "home_directory")
            .filter(**{f"user__{self.username_field}": username})
            .first()
        )

    def import_instance(self, instance, row, **kwargs):
        errors = {}
        try:
            super().import_instance(instance, row, **kwargs)
        except ValidationError as exc:
            errors = exc.update_error_dict(errors)
        self._check_home(instance, errors)
        self._import_user(instance, row, errors, kwargs)
        if errors:
            raise ValidationError(errors)

    def _import_user(self, account, row, errors, kwargs):
        """Find or prepare the Django user of the row; record what to save.

        A username in error still has its email and password checked (against
        a stand-in user of that name), so that the row shows every error at
        once rather than the password's only once the username is fixed.
        """
        number = kwargs.get("row_number")
        user, new = self._find_user(account, row, errors, kwargs)
        if user is None:
            stand_in = self.user_model(
                **{self.username_field: text(row.get("username"))}
            )
            self._check_email(stand_in, row, errors)
            # Whether a blank password would do depends on the user: unknown.
            self._read_password(stand_in, False, number, errors)
            return

        changes = {}
        email = self._check_email(user, row, errors)
        if email and email != getattr(user, self.email_field.name):
            changes["email"] = email
            setattr(user, self.email_field.name, email)

        password = self._read_password(user, new, number, errors)
        if password is not None:
            changes["password"] = password
        if changes and not new and not may_manage_user(kwargs.get("user"), user):
            errors["password" if "password" in changes else "email"] = [
                _(
                    "%(username)r is a staff user: setting the password or email of "
                    "a staff user needs the permission to change users."
                )
                % {"username": user.get_username()}
            ]
        # Saved by before_save_instance once the whole row is valid.
        account._ftp_pending = (user, new, changes)

    def _find_user(self, account, row, errors, kwargs):
        """Return (user, new) for the row, or (None, None) with the username's error.

        A new user is made but not saved; the account gets it as its user.
        """
        number = kwargs.get("row_number")
        username = text(row.get("username"))
        if not username:
            errors["username"] = [_("A username is required.")]
            return None, None
        others = [n for n in self._rows_of.get(username, ()) if n != number]
        if others:
            errors["username"] = [
                _(
                    "Username %(username)r is also in row(s) %(rows)s; expected each "
                    "username once in the file."
                )
                % {"username": username, "rows": ", ".join(map(str, others))}
            ]
            return None, None
        if not account._state.adding:
            return account.user, False
        username = self.user_model.normalize_username(username)
        user = self.user_model._default_manager.filter(
            **{self.username_field: username}
        ).first()
        new = user is None
        if new:
            problem = self._check_new_username(username)
            if problem:
                errors["username"] = [problem]
                return None, None
            user = self.user_model(**{self.username_field: username})
        elif not may_attach_account(kwargs.get("user"), user):
            # A blank password keeps theirs: the admin password on FTP.
            errors["username"] = [
                ATTACH_STAFF_ERROR % {"username": user.get_username()}
            ]
            return None, None
        account.user = user
        return user, new

    def _check_email(self, user, row, errors):
        """Return the row's email, cleaned; "" when blank, None when in error."""
        email = text(row.get("email")) if "email" in row else ""
        if not email or self.email_field is None:
            return ""
        try:
            return self.email_field.clean(email, user)
        except ValidationError:
            errors["email"] = [
                _("%(value)r is not an email address; expected e.g. alice@example.com.")
                % {"value": email}
            ]
            return None

    @staticmethod
    def _check_home(account, errors):
        """A home directory saved before its path was validated is no choice."""
        home = account.home_directory
        if home is None or "home_directory" in errors:
            return
        try:
            validate_path_template(home.path)
        except ValidationError as exc:
            errors["home_directory"] = [
                _(
                    "The home directory %(path)r may not be used: %(reason)s Fix "
                    "its path first, or pick another home directory."
                )
                % {"path": home.path, "reason": " ".join(exc.messages)}
            ]

    @staticmethod
    def _check_new_username(username):
        try:
            validate_new_username(username)
        except ValidationError as exc:
            return exc.messages[0]
        clash = username_taken(username)
        if clash is not None:
            return _(
                "Username %(value)r differs only in case from the existing user "
                "%(existing)r; expected that exact name or another one."
            ) % {"value": username, "existing": clash}
        return None

    def _read_password(self, user, new, number, errors):
        """Return ("hash" | "plain", value), None to keep, after checking it."""
        raw = self._passwords.get(number, "")
        if not raw:
            if new:
                errors["password"] = [
                    _(
                        "A password is required for the new user %(username)r; "
                        "expected a Django password hash or a plain-text password."
                    )
                    % {"username": user.get_username()}
                ]
            return None
        try:
            hasher = identify_hasher(raw)
        except ValueError:
            hasher = None
        if hasher is not None:
            try:
                hasher.decode(raw)
            except (ValueError, TypeError, IndexError, KeyError):
                errors["password"] = [
                    _(
                        "The %(algorithm)s password hash is malformed; expected a "
                        "whole hash as Django stores it, or a plain-text password."
                    )
                    % {"algorithm": hasher.algorithm}
                ]
                return None
            return ("hash", raw)
        if _HASH_SHAPE.match(raw):
            algorithm = raw.split("$", 1)[0]
            errors["password"] = [
                _(
                    "This looks like a password hash of algorithm %(algorithm)r, "
                    "which PASSWORD_HASHERS does not list; expected a hash of a "
                    "listed algorithm, or a plain-text password."
                )
                % {"algorithm": algorithm}
            ]
            return None
        try:
            password_validation.validate_password(raw, user)
        except ValidationError as exc:
            errors["password"] = [
                _("The password of row %(row)s is too weak: %(reason)s")
                % {"row": number, "reason": " ".join(exc.messages)}
            ]
            return None
        return ("plain", raw)

    def validate_instance(
        self, instance, import_validation_errors=None, validate_unique=True
    ):
        # As the default, except that the user field of an account whose
        # Django user is created by this row is left out: the user is saved in
        # before_save_instance, after validation, and until then full_clean
        # would call the field empty.
        errors = dict(import_validation_errors or {})
        exclude = set(errors)
        if instance.user_id is None:
            exclude.add("user")
        try:
            instance.full_clean(exclude=exclude, validate_unique=validate_unique)
        except ValidationError as exc:
            errors = exc.update_error_dict(errors)
        if errors:
            raise ValidationError(errors)

    def skip_row(self, instance, original, row, import_validation_errors=None):
        _, new, changes = getattr(instance, "_ftp_pending", (None, False, {}))
        if new or changes:
            return False  # a new user, or a new password or email
        return super().skip_row(instance, original, row, import_validation_errors)

    def before_save_instance(self, instance, row, **kwargs):
        user, new, changes = instance.__dict__.pop("_ftp_pending", (None, False, {}))
        if user is None:
            return
        kind, value = changes.get("password", (None, None))
        if kind == "hash":
            user.password = value
        elif kind == "plain" and not kwargs.get("dry_run"):
            # The dry run skips the hash: PBKDF2 costs half a second a row.
            user.set_password(value)
        elif new:
            user.set_unusable_password()
        if new or changes:
            user.save()
            instance.user = user

    def after_import(self, dataset, result, **kwargs):
        super().after_import(dataset, result, **kwargs)
        self._passwords.clear()
