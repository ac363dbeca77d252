"""Admin pages for FTP home directories, groups and accounts."""

from django.contrib import admin

from ftpserver_core.models import (
    DirectoryRule,
    FTPUserAccount,
    FTPUserGroup,
    HomeDirectory,
)


class DirectoryRuleInline(admin.TabularInline):
    model = DirectoryRule
    extra = 0
    fields = ["path", "permission", "recursive"]


@admin.register(HomeDirectory)
class HomeDirectoryAdmin(admin.ModelAdmin):
    list_display = ["path", "name", "create_on_login"]
    search_fields = ["path", "name"]
    inlines = [DirectoryRuleInline]


@admin.register(FTPUserGroup)
class FTPUserGroupAdmin(admin.ModelAdmin):
    list_display = ["name", "permission", "home_directory"]
    search_fields = ["name"]
    inlines = [DirectoryRuleInline]


@admin.register(FTPUserAccount)
class FTPUserAccountAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "group",
        "permission",
        "is_enabled",
        "expires_at",
        "last_login_at",
        "last_login_ip",
    ]
    list_filter = ["is_enabled", "group"]
    list_select_related = ["user", "group"]
    raw_id_fields = ["user"]
    readonly_fields = ["last_login_at", "last_login_ip", "created_at", "updated_at"]
    inlines = [DirectoryRuleInline]
