"""The FTP account inline on the Django user's admin page.

The configured user model's admin (Django's ``UserAdmin`` or a project's own)
is subclassed with the inline added, and registered again in its place. If
the user model has no admin on the default site, nothing changes.
"""

from importlib import import_module

from django.apps import apps
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.utils.module_loading import module_has_submodule
from django.utils.translation import gettext_lazy as _

from ftpadmin.forms import ACCOUNT_FIELDS, FTPAccountForm, may_attach_account
from ftpserver_core.models import FTPUserAccount


class FTPAccountInline(admin.StackedInline):
    """The user's FTP account (at most one), editable with the user."""

    model = FTPUserAccount
    fk_name = "user"
    extra = 0
    max_num = 1
    show_change_link = True
    # The account page's form: sizes with units, "Inherit from group".
    form = FTPAccountForm
    verbose_name = _("FTP account")
    verbose_name_plural = _("FTP account")
    fields = [*ACCOUNT_FIELDS, "last_login_at", "last_login_ip"]
    readonly_fields = ["last_login_at", "last_login_ip"]

    def has_add_permission(self, request, obj=None):
        # The account form's rule, on the user's page: only a superuser may
        # put a staff user's (admin) password on FTP.
        if obj is not None and not may_attach_account(request.user, obj):
            return False
        return super().has_add_permission(request, obj)


def _load_user_admin(user_model):
    """Import the admin module of the user model's app, which registers its admin.

    Admin modules are imported in INSTALLED_APPS order, and ``ftpadmin``
    comes before ``django.contrib.auth`` (its templates must win): without
    this, the user admin would be registered only after this module ran.
    """
    app_config = apps.get_app_config(user_model._meta.app_label)
    if module_has_submodule(app_config.module, "admin"):
        import_module(f"{app_config.name}.admin")


UserModel = get_user_model()
_load_user_admin(UserModel)

if admin.site.is_registered(UserModel):
    _BaseUserAdmin = type(admin.site.get_model_admin(UserModel))

    class FTPUserAdmin(_BaseUserAdmin):
        """The user model's own admin, with the FTP account inline."""

        inlines = [*_BaseUserAdmin.inlines, FTPAccountInline]

    admin.site.unregister(UserModel)
    admin.site.register(UserModel, FTPUserAdmin)
