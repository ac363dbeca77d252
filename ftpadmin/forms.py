"""Forms of the FTP accounts admin: the one-form account creation, set expiry."""

import re
from decimal import Decimal

from django import forms
from django.contrib.admin import widgets as admin_widgets
from django.contrib.auth import get_permission_codename, get_user_model
from django.contrib.auth.forms import SetPasswordMixin, UsernameField
from django.core.exceptions import ValidationError
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _

from ftpserver_core.models import FTPUserAccount, FTPUserGroup

#: An FTP account's own settings, in the order every admin form and the
#: import/export show them: its access, its limits, then its quota and
#: bandwidth (an account's blank inherits its group's).
ACCESS_FIELDS = ["group", "home_directory", "permission", "is_enabled", "expires_at"]
LIMIT_FIELDS = ["require_tls", "max_sessions", "allowed_networks"]
QUOTA_FIELDS = [
    "quota_bytes",
    "quota_files",
    "max_upload_size",
    "upload_rate",
    "download_rate",
]
ACCOUNT_FIELDS = ACCESS_FIELDS + LIMIT_FIELDS + QUOTA_FIELDS

# One convention everywhere, Django's filesizeformat: "10.0 MB" in a list is
# 10 x 1024 x 1024 bytes, and so is "10 MB" in a form. K, KB and KiB are all
# 1024 when typed.
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(
    r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[kmgt]?)(?:i?b)?(?:/s)?\s*$",
    re.IGNORECASE,
)
_SHOWN = [("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)]


def parse_size(text):
    """Return ``text`` (``1048576``, ``500 KB``, ``10M``, ``1.5 GiB``) in bytes.

    Raise ValueError when it is not a size.
    """
    match = _SIZE.match(str(text))
    if match is None:
        raise ValueError(text)
    # Decimal: a plain byte count of 19 digits stays exact.
    number = Decimal(match["number"]) * _UNITS[match["unit"].lower()]
    return int(number.to_integral_value())


def show_size(value):
    """Return a byte count as typed back in the form: ``10 MB`` when exact.

    The units are filesizeformat's (``MB`` is 1024 x 1024 bytes), so that a
    form and the lists say the same.
    """
    for unit, factor in _SHOWN:
        if value and value % factor == 0:
            return f"{value // factor} {unit}"
    return str(value)


class SizeField(forms.IntegerField):
    """A number of bytes, typed as bytes or with a unit (500 KB, 10 MB: 1024s)."""

    #: What an error says was expected.
    example = _("a size such as 1048576, 500 KB, 10 MB or 2 GB, or blank")

    def __init__(self, *, widget=None, **kwargs):
        # The admin would give a number input, which refuses units.
        super().__init__(widget=forms.TextInput(attrs={"size": 12}), **kwargs)

    def prepare_value(self, value):
        if isinstance(value, int) and not isinstance(value, bool):
            return show_size(value)
        return value

    def to_python(self, value):
        if value in self.empty_values or str(value).strip() == "":
            return None
        try:
            return parse_size(value)
        except ValueError:
            raise ValidationError(
                _("%(value)r is not a size; expected %(example)s."),
                code="invalid",
                params={"value": str(value), "example": self.example},
            ) from None


class RateField(SizeField):
    """Bytes per second, typed as bytes or with a unit (2 MB, 500K/s)."""

    example = _("a rate such as 2 MB (per second), 500 KB or 1048576, or blank")


_UNITS_HELP = _(
    "Bytes, or with a unit: KB, MB, GB, TB are 1024, 1024², … bytes, as the "
    "lists show sizes (K, M, KiB, MiB count the same)."
)

#: Help for the quota and bandwidth fields on the account and group forms.
QUOTA_HELP = {
    "quota_bytes": format_lazy(
        "{} {}",
        _("What the home directory may hold in all, e.g. 10 GB."),
        _UNITS_HELP,
    ),
    "quota_files": _("How many files the home directory may hold, e.g. 10000."),
    "max_upload_size": format_lazy(
        "{} {}", _("The largest file one upload may write, e.g. 2 GB."), _UNITS_HELP
    ),
    "upload_rate": format_lazy(
        "{} {}",
        _(
            "Upload bandwidth per second, shared by all sessions of the "
            "account on every server, e.g. 5 MB."
        ),
        _UNITS_HELP,
    ),
    "download_rate": format_lazy(
        "{} {}",
        _(
            "Download bandwidth per second, shared by all sessions of the "
            "account on every server, e.g. 5 MB."
        ),
        _UNITS_HELP,
    ),
}
QUOTA_FIELD_CLASSES = {
    "quota_bytes": SizeField,
    "max_upload_size": SizeField,
    "upload_rate": RateField,
    "download_rate": RateField,
}
INHERIT_HELP = {
    "account": _("Blank: the group's, or none."),
    "group": _("Blank: none (an account may set its own)."),
}

#: What None means for an inheritable yes/no, as its select and the lists
#: call it: an account's follows its group; a group's leaves it to the server.
INHERIT_LABELS = {
    "account": _("Inherit from group"),
    "group": _("Server default"),
}
REQUIRE_TLS_HELP = {
    "account": _(
        "Refuse logins over plain FTP. Inherit from group: the group's choice; "
        "without a group, or if the group says Server default, the server's "
        "(FTPSERVER_TLS_REQUIRED when TLS is on)."
    ),
    "group": _(
        "Refuse logins over plain FTP for the group's accounts (an account may "
        "choose otherwise). Server default: the server's (FTPSERVER_TLS_REQUIRED "
        "when TLS is on)."
    ),
}


class InheritBooleanSelect(forms.NullBooleanSelect):
    """Yes, No, or what blank means here ("Inherit from group") for "Unknown"."""

    def __init__(self, null_label, attrs=None):
        super().__init__(attrs)
        self.choices = [
            ("unknown", null_label),
            ("true", _("Yes")),
            ("false", _("No")),
        ]


def limit_widgets(kind):
    """The widgets of an ``account`` or ``group`` form's inheritable yes/no fields."""
    return {"require_tls": InheritBooleanSelect(INHERIT_LABELS[kind])}


def quota_help(kind):
    """The help texts of the limit fields on an ``account`` or ``group`` form."""
    return {
        **{
            name: format_lazy("{} {}", text, INHERIT_HELP[kind])
            for name, text in QUOTA_HELP.items()
        },
        "require_tls": REQUIRE_TLS_HELP[kind],
    }


def validate_new_username(username):
    """Raise ValidationError unless the user model's username field accepts it."""
    user_model = get_user_model()
    field = user_model._meta.get_field(user_model.USERNAME_FIELD)
    try:
        field.clean(username, None)
    except ValidationError as exc:
        raise ValidationError(
            _("Username %(value)r is not valid: %(reason)s"),
            code="invalid_username",
            params={"value": username, "reason": " ".join(exc.messages)},
        ) from exc


def username_taken(username):
    """Return the existing username equal to ``username`` but for case, or None.

    As Django's UserCreationForm: no two users whose names differ only in case.
    """
    user_model = get_user_model()
    name = user_model.USERNAME_FIELD
    return (
        user_model._default_manager.filter(**{f"{name}__iexact": username})
        .values_list(name, flat=True)
        .first()
    )


def is_staff_user(user):
    """Return whether ``user`` may log in to this admin (staff or superuser)."""
    return bool(
        getattr(user, "is_staff", False) or getattr(user, "is_superuser", False)
    )


def may_manage_user(actor, user):
    """Return whether ``actor`` may set the password or the email of ``user``.

    Staff users and superusers log in to this admin with that password, so
    setting theirs needs what Django's user admin needs: the change
    permission on users. Other users' FTP passwords are for anyone who may
    change FTP accounts. ``actor`` None (code, not a request) may.
    """
    if actor is None:
        return True
    if not is_staff_user(user):
        return True
    opts = user._meta
    return actor.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")


def may_attach_account(actor, user):
    """Return whether ``actor`` may give ``user`` an FTP account.

    An FTP account lets its user log in over FTP with their password. A
    staff user's or superuser's password is their admin password: only a
    superuser may put that on FTP, whatever else ``actor`` may change.
    ``actor`` None (code, not a request) may.
    """
    if actor is None or not is_staff_user(user):
        return True
    return bool(getattr(actor, "is_superuser", False))


ATTACH_STAFF_ERROR = _(
    "%(username)r is a staff user or superuser: only a superuser may give them an "
    "FTP account, which would accept their admin password over FTP. Pick a user "
    "who is not staff, or ask a superuser."
)


class FTPAccountAddForm(SetPasswordMixin, forms.ModelForm):
    """Create an FTP account and, in the same form, its Django user.

    Either pick an existing user without an FTP account (a password given
    replaces theirs; blank keeps it) or type the username of a new user,
    who then needs a password. Passwords go through
    ``AUTH_PASSWORD_VALIDATORS`` and ``set_password``.
    """

    existing_user = forms.ModelChoiceField(
        queryset=None,
        required=False,
        label=_("Existing user"),
        help_text=_(
            "A Django user without an FTP account. Only a superuser may pick a "
            "staff user or superuser."
        ),
    )
    new_username = UsernameField(
        required=False,
        label=_("or new user"),
        help_text=_("The username of a Django user to create with this account."),
    )
    email = forms.EmailField(
        required=False,
        label=_("Email address"),
        help_text=_("Of the new user (optional)."),
    )
    password1, password2 = SetPasswordMixin.create_password_fields()

    #: The user submitting the form; set by the admin's get_form.
    request_user = None

    class Meta:
        model = FTPUserAccount
        fields = ACCOUNT_FIELDS
        field_classes = QUOTA_FIELD_CLASSES
        help_texts = quota_help("account")
        widgets = limit_widgets("account")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.user_model = get_user_model()
        self.username_field = self.user_model.USERNAME_FIELD
        users = self.user_model._default_manager.order_by(self.username_field)
        choice = self.fields["existing_user"]
        # Any user validates (so that one with an account gets a clear error
        # rather than "not one of the available choices"); the list offers
        # those without an account.
        choice.queryset = users
        # Staff are offered to superusers only (clean_existing_user says why
        # if one is posted anyway); tested in Python, as a custom user model
        # may have is_staff as a property rather than a column.
        choice.widget.choices = [
            ("", "---------"),
            *(
                (user.pk, user.get_username())
                for user in users.filter(ftp_account__isnull=True)
                if may_attach_account(self.request_user, user)
            ),
        ]
        for name in ("password1", "password2"):
            self.fields[name].required = False
        self.fields["password1"].help_text = format_lazy(
            "{} {}",
            _(
                "Required for a new user; for an existing user, blank keeps "
                "their password."
            ),
            self.fields["password1"].help_text,
        )
        if self.user_model.get_email_field_name() not in {
            f.name for f in self.user_model._meta.fields
        }:
            del self.fields["email"]

    def clean_existing_user(self):
        user = self.cleaned_data.get("existing_user")
        if user is not None and FTPUserAccount.objects.filter(user=user).exists():
            raise ValidationError(
                _(
                    "User %(username)r already has an FTP account; edit that "
                    "account instead, or pick another user."
                ),
                code="has_account",
                params={"username": user.get_username()},
            )
        if user is not None and not may_attach_account(self.request_user, user):
            raise ValidationError(
                ATTACH_STAFF_ERROR,
                code="staff_account",
                params={"username": user.get_username()},
            )
        return user

    def clean_new_username(self):
        username = self.cleaned_data.get("new_username")
        if not username:
            return ""
        validate_new_username(username)
        taken = username_taken(username)
        if taken is not None:
            raise ValidationError(
                _(
                    "The username %(value)r is taken (by %(taken)r); pick that user "
                    "under Existing user, or type another username."
                ),
                code="username_taken",
                params={"value": username, "taken": taken},
            )
        return username

    def clean(self):
        cleaned = super().clean()
        existing = cleaned.get("existing_user")
        new = cleaned.get("new_username")
        if existing is not None and new:
            self.add_error(
                None,
                ValidationError(
                    _(
                        "Pick an existing user or type a new username, not both "
                        "(got %(existing)r and %(new)r)."
                    ),
                    code="two_users",
                    params={"existing": existing.get_username(), "new": new},
                ),
            )
        elif (
            existing is None
            and not new
            and not {"existing_user", "new_username"} & set(self.errors)
        ):
            self.add_error(
                None,
                ValidationError(
                    _(
                        "Pick an existing user or type a username for a new user; "
                        "both are blank."
                    ),
                    code="no_user",
                ),
            )
        if cleaned.get("password1") and not cleaned.get("password2"):
            self.add_error(
                "password2",
                ValidationError(
                    _("Type the same password again, to confirm it."),
                    code="required",
                ),
            )
        if new and not cleaned.get("password1"):
            self.add_error(
                "password1",
                ValidationError(
                    _("The new user %(username)r needs a password."),
                    code="required",
                    params={"username": new},
                ),
            )
        if existing is not None and cleaned.get("email"):
            self.add_error(
                "email",
                ValidationError(
                    _(
                        "An email address is for a new user; %(username)r keeps "
                        "theirs (change it on their user page)."
                    ),
                    code="email_for_new_user",
                    params={"username": existing.get_username()},
                ),
            )
        if (
            existing is not None
            and cleaned.get("password1")
            and not may_manage_user(self.request_user, existing)
        ):
            self.add_error(
                "password1",
                ValidationError(
                    _(
                        "%(username)r is a staff user: setting their password needs "
                        "the permission to change users. Leave it blank to keep it."
                    ),
                    code="staff_password",
                    params={"username": existing.get_username()},
                ),
            )
        self.validate_passwords()
        return cleaned

    def _post_clean(self):
        super()._post_clean()
        # As Django's user creation form: the validators compare the password
        # with the user's attributes, so they run once those are known.
        user = self.user()
        if user is not None:
            self.validate_password_for_user(user)

    def user(self):
        """Return the chosen user, or an unsaved new one; None if neither is valid."""
        existing = self.cleaned_data.get("existing_user")
        if existing is not None:
            return existing
        username = self.cleaned_data.get("new_username")
        if not username:
            return None
        if getattr(self, "_new_user", None) is None:
            self._new_user = self.user_model(**{self.username_field: username})
            if self.cleaned_data.get("email"):
                setattr(
                    self._new_user,
                    self.user_model.get_email_field_name(),
                    self.cleaned_data["email"],
                )
        return self._new_user

    def save_user(self):
        """Create the new user, or set the chosen user's password; return it."""
        user = self.user()
        if user.pk is None or self.cleaned_data.get("password1"):
            self.set_password_and_save(user)
        return user


class FTPAccountForm(forms.ModelForm):
    """The change page of an account: sizes and rates with units."""

    class Meta:
        model = FTPUserAccount
        fields = ACCOUNT_FIELDS
        field_classes = QUOTA_FIELD_CLASSES
        help_texts = quota_help("account")
        widgets = limit_widgets("account")


class FTPGroupForm(forms.ModelForm):
    """A group's form: sizes and rates with units."""

    class Meta:
        model = FTPUserGroup
        fields = [
            "name",
            "permission",
            "home_directory",
            "description",
            *LIMIT_FIELDS,
            *QUOTA_FIELDS,
        ]
        field_classes = QUOTA_FIELD_CLASSES
        help_texts = quota_help("group")
        widgets = limit_widgets("group")


class ExpiryField(forms.SplitDateTimeField):
    """A date and a time, both blank for "never"; errors quote what was typed."""

    def clean(self, value):
        try:
            return super().clean(value)
        except ValidationError:
            typed = " ".join(str(v) for v in (value or ()) if v)
            raise ValidationError(
                _(
                    "%(value)r is not a date and time; expected a date such as "
                    "2026-12-31 and a time such as 23:59, or both blank to clear "
                    "the expiry."
                ),
                code="invalid",
                params={"value": typed},
            ) from None


class SetExpiryForm(forms.Form):
    """The intermediate page of the "set expiry" action."""

    expires_at = ExpiryField(
        label=_("Expires at"),
        required=False,
        widget=admin_widgets.AdminSplitDateTime,
        help_text=_(
            "No login from this time on. Leave date and time blank to clear the "
            "expiry: the accounts never expire."
        ),
    )
