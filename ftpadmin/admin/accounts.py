"""Admin pages for FTP home directories, groups and accounts.

The FTP server reads an account at every login, so a change saved here
applies at the account's next login; open sessions keep the policy they
logged in with.
"""

import datetime

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model, update_session_auth_hash
from django.contrib.auth.forms import AdminPasswordChangeForm
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.formats import localize
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from import_export.admin import ImportExportModelAdmin
from import_export.formats.base_formats import CSV as ImportCSV

from ftpadmin.admin.inherit import (
    AccountInheritFilter,
    GroupInheritFilter,
    inherit_display,
)
from ftpadmin.formats import CSV, XLSX
from ftpadmin.forms import (
    ACCESS_FIELDS,
    LIMIT_FIELDS,
    QUOTA_FIELDS,
    FTPAccountAddForm,
    FTPAccountForm,
    FTPGroupForm,
    SetExpiryForm,
    may_attach_account,
    may_manage_user,
)
from ftpadmin.list_filters import (
    QUOTA_WARNING_PERCENT,
    QuotaUsageFilter,
    annotate_quota,
)
from ftpadmin.resources import FTPUserAccountResource
from ftpserver_core.models import (
    DirectoryRule,
    FTPUserAccount,
    FTPUserGroup,
    HomeDirectory,
)
from ftpserver_core.policy import LoginRefused, resolve_policy

# Admin modules are imported once the app registry is ready.
USERNAME = f"user__{get_user_model().USERNAME_FIELD}"
EXPIRING_SOON = datetime.timedelta(days=7)
QUOTA_DESCRIPTION = _(
    "Sizes and rates take a unit (500 KB, 10 MB, 2 GB; 1024s, as the lists "
    "show sizes) or a plain number of "
    "bytes. The quota counts what the home directory holds; bandwidth limits "
    "are shared by all of an account's sessions on every server. A change "
    "applies from the account's next login."
)


class DirectoryRuleInline(admin.TabularInline):
    model = DirectoryRule
    extra = 0
    fields = ["path", "permission", "recursive"]


@admin.register(HomeDirectory)
class HomeDirectoryAdmin(admin.ModelAdmin):
    list_display = ["path", "name", "create_on_login"]
    list_filter = ["create_on_login"]
    search_fields = ["path", "name", "description"]
    ordering = ["path"]
    inlines = [DirectoryRuleInline]


@admin.register(FTPUserGroup)
class FTPUserGroupAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "permission",
        "home_directory",
        "tls_required",
        "max_sessions",
        "account_count",
    ]
    list_filter = [("require_tls", GroupInheritFilter), "home_directory"]
    list_select_related = ["home_directory"]
    search_fields = ["name", "description"]
    ordering = ["name"]
    fieldsets = [
        (None, {"fields": ["name", "permission", "home_directory", "description"]}),
        (
            _("Limits"),
            {"fields": ["require_tls", "max_sessions", "allowed_networks"]},
        ),
        (
            _("Quota and bandwidth"),
            {"description": QUOTA_DESCRIPTION, "fields": QUOTA_FIELDS},
        ),
    ]
    form = FTPGroupForm
    inlines = [DirectoryRuleInline]

    def get_queryset(self, request):
        # The account count of every row in the same query (no query per row).
        return super().get_queryset(request).annotate(account_count=Count("accounts"))

    @admin.display(description=_("require TLS"), ordering="require_tls")
    def tls_required(self, obj):
        return inherit_display(obj.require_tls, "group")

    @admin.display(description=_("accounts"), ordering="account_count")
    def account_count(self, obj):
        url = reverse(
            "admin:ftpserver_core_ftpuseraccount_changelist",
            current_app=self.admin_site.name,
        )
        return format_html(
            '<a href="{}?group__id__exact={}">{}</a>', url, obj.pk, obj.account_count
        )


def quota_bar(used, limit, what):
    """The HTML of one usage bar: "3.2 MB of 10.0 MB (32%)" under a meter.

    ``what`` is "bytes" or "files". A quota of 0 is full from the start.
    """
    percent = used * 100 // limit if limit else 100
    if used >= limit:
        level = "ftp-quota-over"
    elif percent >= QUOTA_WARNING_PERCENT:
        level = "ftp-quota-high"
    else:
        level = "ftp-quota-ok"
    if what == "bytes":
        text = gettext("%(used)s of %(limit)s (%(percent)d%%)") % {
            "used": filesizeformat(used),
            "limit": filesizeformat(limit),
            "percent": percent,
        }
    else:
        text = gettext("%(used)d of %(limit)d files (%(percent)d%%)") % {
            "used": used,
            "limit": limit,
            "percent": percent,
        }
    # A <meter> draws the bar from its value: no inline style, no script.
    # Its regions: green up to 89 %, yellow from 90 %, red when full.
    return format_html(
        '<div class="ftp-quota {}"><meter min="0" max="100" low="{}" high="100" '
        'optimum="0" value="{}">{}%</meter> <span class="ftp-quota-text">{}</span>'
        "</div>",
        level,
        QUOTA_WARNING_PERCENT - 1,
        min(percent, 100),
        percent,
        text,
    )


class ExpiryListFilter(admin.SimpleListFilter):
    title = _("expiry")
    parameter_name = "expiry"

    def lookups(self, request, model_admin):
        return [
            ("expired", _("Expired")),
            ("active", _("Not expired")),
            ("soon", _("Expires within 7 days")),
            ("never", _("Never expires")),
        ]

    def queryset(self, request, queryset):
        now = timezone.now()
        match self.value():
            case "expired":
                return queryset.filter(expires_at__lte=now)
            case "active":
                return queryset.filter(
                    Q(expires_at__isnull=True) | Q(expires_at__gt=now)
                )
            case "soon":
                return queryset.filter(
                    expires_at__gt=now, expires_at__lte=now + EXPIRING_SOON
                )
            case "never":
                return queryset.filter(expires_at__isnull=True)
        return queryset


def yes_no(value):
    return gettext("yes") if value else gettext("no")


def folder_note(state):
    """Say what becomes of a directory rule's folder (a FOLDER_STATES value)."""
    if state == "exists":
        return gettext("exists")
    if state == "created_at_login":
        return gettext("does not exist; created at the next login")
    if state == "blocked":
        return gettext(
            "does not exist and will not be created: a link or a file is in "
            "its way, or it is outside the home"
        )
    option = HomeDirectory._meta.get_field("create_on_login").verbose_name
    return gettext(
        "does not exist and will not be created: the home is not created at "
        'login (create the folder on the server, or set the home\'s "%(option)s")'
    ) % {"option": option}


def render_policy(account):
    """HTML of what the server applies at the account's next login.

    Computed by ``resolve_policy``, the code the server runs at login.
    """
    try:
        policy = resolve_policy(account)
    except LoginRefused as refused:
        return format_html(
            '<p class="errornote ftp-policy-refused">{} <strong>{}</strong>{}</p>',
            gettext("The server would refuse this account's logins:"),
            refused.reason,
            f" ({refused.detail})" if refused.detail else "",
        )
    refusals = []
    if not getattr(account.user, "is_active", True):
        refusals.append(("inactive_user", gettext("the Django user is inactive")))
    if not policy.is_enabled:
        refusals.append(("account_disabled", gettext("the account is disabled")))
    if policy.expires_at is not None and policy.expires_at <= timezone.now():
        refusals.append(
            (
                "account_expired",
                gettext("the account expired at %(time)s")
                % {"time": localize(timezone.localtime(policy.expires_at))},
            )
        )
    home_note = (
        gettext("created at first login if missing")
        if policy.create_home
        else gettext("must exist")
    )
    summary = [
        (gettext("Home directory"), "policy-home", policy.home, home_note),
        (gettext("Permission"), "policy-permission", policy.permission, ""),
        (gettext("Require TLS"), "policy-tls", yes_no(policy.require_tls), ""),
        (
            gettext("Maximum sessions"),
            "policy-sessions",
            policy.max_sessions if policy.max_sessions is not None else "",
            "" if policy.max_sessions is not None else gettext("no limit"),
        ),
        (
            gettext("Allowed networks"),
            "policy-networks",
            " ".join(str(n) for n in policy.allowed_networks),
            "" if policy.allowed_networks else gettext("anywhere"),
        ),
    ]
    parts = [
        format_html_join(
            "",
            '<p class="errornote ftp-policy-refused">{} <strong>{}</strong> ({})</p>',
            (
                (gettext("Logins are refused now:"), reason, why)
                for reason, why in refusals
            ),
        ),
        format_html(
            '<table class="ftp-policy"><tbody>{}</tbody></table>',
            format_html_join(
                "",
                '<tr><th scope="row">{}</th><td class="{}">{}</td><td>{}</td></tr>',
                summary,
            ),
        ),
    ]
    if policy.rules:
        parts.append(
            format_html(
                '<table class="ftp-policy-rules"><thead><tr><th>{}</th><th>{}</th>'
                "<th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead>"
                "<tbody>{}</tbody></table>",
                gettext("Directory"),
                gettext("Permission"),
                gettext("Recursive"),
                gettext("Source"),
                gettext("Rule path"),
                gettext("Folder"),
                format_html_join(
                    "",
                    '<tr class="ftp-policy-rule"><td>{}</td><td>{}</td><td>{}</td>'
                    '<td>{}</td><td>{}</td><td class="ftp-rule-folder {}">{}</td></tr>',
                    (
                        (
                            rule.path,
                            rule.permission or "-",
                            yes_no(rule.recursive),
                            rule.source,
                            rule.template,
                            f"ftp-rule-folder-{state}",
                            folder_note(state),
                        )
                        for rule, _folder, state in policy.rule_folder_states()
                    ),
                ),
            )
        )
    else:
        parts.append(format_html("<p>{}</p>", gettext("No directory rules apply.")))
    return format_html("{}" * len(parts), *parts)


@admin.register(FTPUserAccount)
class FTPUserAccountAdmin(ImportExportModelAdmin):
    list_display = [
        "username",
        "group",
        "effective_permission",
        "is_enabled",
        "expires_at",
        "quota",
        # Time and address in one column: the list fits 1280 pixels.
        "last_login",
    ]
    list_filter = [
        "is_enabled",
        ExpiryListFilter,
        "group",
        ("require_tls", AccountInheritFilter),
        QuotaUsageFilter,
    ]
    # Everything resolve_policy reads for the permission column: no query per row.
    list_select_related = ["user", "group__home_directory", "home_directory"]
    search_fields = [USERNAME, "group__name", "last_login_ip"]
    search_help_text = _("Username, group name or last login IP (part of it).")
    ordering = [USERNAME]
    actions = ["enable_accounts", "disable_accounts", "set_expiry"]
    inlines = [DirectoryRuleInline]
    readonly_fields = [
        "user_link",
        "password_link",
        "effective_policy",
        "last_login_at",
        "last_login_ip",
        "created_at",
        "updated_at",
    ]
    fieldsets = [
        (None, {"fields": ["user_link", "password_link"]}),
        (
            _("FTP access"),
            {"fields": ACCESS_FIELDS},
        ),
        (_("Limits"), {"fields": LIMIT_FIELDS}),
        (
            _("Quota and bandwidth"),
            {"description": QUOTA_DESCRIPTION, "fields": QUOTA_FIELDS},
        ),
        (
            _("What the server applies at the next login"),
            {
                "description": _(
                    "Resolved by the FTP server's own code from the saved account, "
                    "its group and home directory. Open sessions keep the policy "
                    "they logged in with."
                ),
                "fields": ["effective_policy"],
            },
        ),
        (
            _("Activity"),
            {"fields": ["last_login_at", "last_login_ip", "created_at", "updated_at"]},
        ),
    ]
    add_form = FTPAccountAddForm
    add_fieldsets = [
        (
            _("User"),
            {
                "description": _(
                    "Pick an existing Django user, or type the username of a new one."
                ),
                "fields": ["existing_user", "new_username", "email"],
            },
        ),
        (_("Password"), {"fields": ["password1", "password2"]}),
        (
            _("FTP access"),
            {"fields": ACCESS_FIELDS},
        ),
        (_("Limits"), {"fields": LIMIT_FIELDS}),
        (
            _("Quota and bandwidth"),
            {"description": QUOTA_DESCRIPTION, "fields": QUOTA_FIELDS},
        ),
    ]
    form = FTPAccountForm
    change_password_template = "admin/auth/user/change_password.html"  # noqa: S105
    set_expiry_template = "admin/ftpserver_core/ftpuseraccount/set_expiry.html"

    resource_classes = [FTPUserAccountResource]
    # Imports read plain CSV; exports escape formulas (ftpadmin.formats).
    import_formats = [ImportCSV, XLSX]
    export_formats = [CSV, XLSX]
    import_template_name = "admin/ftpserver_core/ftpuseraccount/import.html"

    class Media:
        css = {"all": ["ftpadmin/accounts.css"]}

    # --- the list

    def get_queryset(self, request):
        # Usage and effective quota in the list's own query (one LEFT JOIN
        # to the usage; the group is joined already).
        return annotate_quota(super().get_queryset(request))

    @admin.display(description=_("username"), ordering=USERNAME)
    def username(self, obj):
        return obj.user.get_username()

    @admin.display(description=_("last FTP login"), ordering="last_login_at")
    def last_login(self, obj):
        if obj.last_login_at is None and not obj.last_login_ip:
            return "-"
        return format_html(
            '{}<span class="ftp-last-login-ip quiet">{}</span>',
            localize(timezone.localtime(obj.last_login_at))
            if obj.last_login_at
            else "-",
            obj.last_login_ip or "",
        )

    @admin.display(description=_("quota usage"), ordering="quota_used")
    def quota(self, obj):
        bars = []
        if obj.quota_limit is not None:
            bars.append(quota_bar(obj.quota_used, obj.quota_limit, "bytes"))
        if obj.files_limit is not None:
            bars.append(quota_bar(obj.files_used, obj.files_limit, "files"))
        if not bars:
            # No quota: what the home holds, if the server counted it.
            if not obj.quota_used:
                return "-"
            return format_html(
                '<span class="quiet">{}</span>',
                gettext("%(used)s, no quota")
                % {"used": filesizeformat(obj.quota_used)},
            )
        return format_html("{}" * len(bars), *bars)

    @admin.display(description=_("effective permission"))
    def effective_permission(self, obj):
        try:
            policy = resolve_policy(obj, rules=())
        except LoginRefused as refused:
            return format_html(
                '<span class="ftp-refused" title="{}">{}</span>',
                refused.detail,
                gettext("login refused: %(reason)s") % {"reason": refused.reason},
            )
        if obj.permission:
            return policy.permission
        return format_html(
            '{} <span class="quiet">({})</span>',
            policy.permission,
            gettext("inherited"),
        )

    # --- the change page

    @admin.display(description=_("user"))
    def user_link(self, obj):
        user = obj.user
        try:
            url = reverse(
                f"admin:{user._meta.app_label}_{user._meta.model_name}_change",
                args=[user.pk],
                current_app=self.admin_site.name,
            )
        except NoReverseMatch:
            return user.get_username()
        return format_html('<a href="{}">{}</a>', url, user.get_username())

    @admin.display(description=_("password"))
    def password_link(self, obj):
        url = reverse(
            "admin:ftpserver_core_ftpuseraccount_password",
            args=[obj.pk],
            current_app=self.admin_site.name,
        )
        return format_html(
            '<a class="button" href="{}">{}</a>', url, gettext("Change password")
        )

    @admin.display(description=_("effective policy"))
    def effective_policy(self, obj):
        # The saved account, as the server will read it, not the form's
        # unsaved values after a failed POST.
        saved = (
            FTPUserAccount.objects.select_related(
                "user", "group__home_directory", "home_directory"
            )
            .filter(pk=obj.pk)
            .first()
        )
        if saved is None:
            return ""
        return render_policy(saved)

    def get_fieldsets(self, request, obj=None):
        # The add page is the one-form creation; the password link is for
        # those who may change the account.
        if obj is None:
            return self.add_fieldsets
        fieldsets = super().get_fieldsets(request, obj)
        if self.has_change_permission(request, obj):
            return fieldsets
        return [
            (
                name,
                {**opts, "fields": [f for f in opts["fields"] if f != "password_link"]},
            )
            for name, opts in fieldsets
        ]

    def get_form(self, request, obj=None, **kwargs):
        # As Django's UserAdmin: the add page has its own form. The form class
        # is made per request, so it can carry the user submitting it (the
        # password of a staff user needs the permission to change users).
        if obj is None:
            kwargs["form"] = self.add_form
        form = super().get_form(request, obj, **kwargs)
        if obj is None:
            form.request_user = request.user
        return form

    def save_model(self, request, obj, form, change):
        # The add form creates the Django user (or sets the picked user's
        # password) before the account; changeform_view runs both in one
        # transaction.
        if not change:
            # The form said why already; this holds should a form class that
            # skips its check ever be put here.
            if not may_attach_account(request.user, form.user()):
                raise PermissionDenied
            obj.user = form.save_user()
        super().save_model(request, obj, form, change)

    # --- the password page

    def get_urls(self):
        return [
            path(
                "<path:object_id>/password/",
                self.admin_site.admin_view(self.change_password_view),
                name="ftpserver_core_ftpuseraccount_password",
            ),
            *super().get_urls(),
        ]

    @method_decorator(sensitive_post_parameters())
    @method_decorator(csrf_protect)
    def change_password_view(self, request, object_id):
        """Django's change-password page for the account's user."""
        account = self.get_object(request, unquote(object_id))
        if account is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_change_permission(request, account):
            raise PermissionDenied
        user = account.user
        if not may_manage_user(request.user, user):
            raise PermissionDenied
        form = AdminPasswordChangeForm(user, request.POST or None)
        if request.method == "POST" and form.is_valid():
            # As Django's user admin: disabling password logins needs its own
            # button, so a form posted without JavaScript cannot do it by mistake.
            if not (
                form.cleaned_data["set_usable_password"]
                or "unset-password" in request.POST
            ):
                messages.error(
                    request,
                    gettext("Conflicting form data submitted. Please try again."),
                )
                return HttpResponseRedirect(request.get_full_path())
            form.save()
            self.log_change(request, account, [{"changed": {"fields": ["password"]}}])
            if user.has_usable_password():
                messages.success(request, gettext("Password changed successfully."))
            else:
                messages.success(
                    request, gettext("Password-based authentication was disabled.")
                )
            update_session_auth_hash(request, form.user)
            return HttpResponseRedirect(
                reverse(
                    "admin:ftpserver_core_ftpuseraccount_change",
                    args=[account.pk],
                    current_app=self.admin_site.name,
                )
            )
        title = (
            _("Change password: %s")
            if user.has_usable_password()
            else _("Set password: %s")
        )
        context = {
            **self.admin_site.each_context(request),
            "title": title % user.get_username(),
            "adminForm": helpers.AdminForm(
                form, [(None, {"fields": list(form.base_fields)})], {}
            ),
            "form_url": "",
            "form": form,
            "is_popup": False,
            "add": True,
            "change": False,
            "has_delete_permission": False,
            "has_change_permission": True,
            "has_absolute_url": False,
            "opts": self.opts,
            "original": account,
            "save_as": False,
            "show_save": True,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.change_password_template, context)

    # --- actions

    def _log_bulk_change(self, request, accounts, field):
        LogEntry.objects.log_actions(
            user_id=request.user.pk,
            queryset=accounts,
            action_flag=CHANGE,
            change_message=[
                {"changed": {"fields": [str(self.opts.get_field(field).verbose_name)]}}
            ],
        )

    def _set_enabled(self, request, queryset, enabled):
        accounts = list(queryset)
        count = queryset.update(is_enabled=enabled, updated_at=timezone.now())
        self._log_bulk_change(request, accounts, "is_enabled")
        if enabled:
            message = ngettext(
                "Enabled %(count)d FTP account.",
                "Enabled %(count)d FTP accounts.",
                count,
            )
        else:
            message = ngettext(
                "Disabled %(count)d FTP account; it cannot log in from its next login.",
                "Disabled %(count)d FTP accounts; they cannot log in from their "
                "next login.",
                count,
            )
        self.message_user(request, message % {"count": count}, messages.SUCCESS)

    @admin.action(description=_("Enable selected FTP accounts"), permissions=["change"])
    def enable_accounts(self, request, queryset):
        self._set_enabled(request, queryset, True)

    @admin.action(
        description=_("Disable selected FTP accounts"), permissions=["change"]
    )
    def disable_accounts(self, request, queryset):
        self._set_enabled(request, queryset, False)

    @admin.action(
        description=_("Set the expiry of selected FTP accounts"),
        permissions=["change"],
    )
    def set_expiry(self, request, queryset):
        """Ask for the expiry on an intermediate page, then set it."""
        form = SetExpiryForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            expires_at = form.cleaned_data["expires_at"]
            accounts = list(queryset)
            count = queryset.update(expires_at=expires_at, updated_at=timezone.now())
            self._log_bulk_change(request, accounts, "expires_at")
            if expires_at is None:
                message = ngettext(
                    "Cleared the expiry of %(count)d FTP account: it never expires.",
                    "Cleared the expiry of %(count)d FTP accounts: they never expire.",
                    count,
                ) % {"count": count}
            else:
                message = ngettext(
                    "Set the expiry of %(count)d FTP account: %(time)s",
                    "Set the expiry of %(count)d FTP accounts: %(time)s",
                    count,
                ) % {"count": count, "time": localize(timezone.localtime(expires_at))}
            self.message_user(request, message, messages.SUCCESS)
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": _("Set the expiry of FTP accounts"),
            "opts": self.opts,
            "queryset": queryset,
            "form": form,
            "media": self.media + form.media,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.set_expiry_template, context)

    # --- import and export

    def has_import_permission(self, request):
        # import-export lets any staff user import by default; an import adds
        # and changes accounts.
        return self.has_add_permission(request) and self.has_change_permission(request)

    def has_export_permission(self, request):
        # import-export lets any staff user export by default.
        return self.has_view_permission(request)

    def get_import_data_kwargs(self, **kwargs):
        # All or nothing at the confirm step too: if a row became invalid
        # since the preview (a username taken meanwhile), roll back every row.
        return {
            **super().get_import_data_kwargs(**kwargs),
            "rollback_on_validation_errors": True,
        }

    def process_result(self, result, request):
        # The default says "Import finished" even when the confirm step was
        # rolled back; say what failed and go back to the import page.
        if not (result.has_errors() or result.has_validation_errors()):
            return super().process_result(result, request)
        for row in result.invalid_rows:
            for field, errors in row.error_dict.items():
                messages.error(
                    request,
                    gettext("Nothing was imported. Row %(row)s, %(field)s: %(errors)s")
                    % {"row": row.number, "field": field, "errors": " ".join(errors)},
                )
        for number, errors in result.row_errors():
            for error in errors:
                messages.error(
                    request,
                    gettext("Nothing was imported. Row %(row)s: %(error)s")
                    % {"row": number, "error": error.error},
                )
        for error in result.base_errors:
            messages.error(
                request,
                gettext("Nothing was imported: %(error)s") % {"error": error.error},
            )
        return HttpResponseRedirect(
            reverse(
                "admin:ftpserver_core_ftpuseraccount_import",
                current_app=self.admin_site.name,
            )
        )
