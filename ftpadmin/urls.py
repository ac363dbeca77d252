"""URLs of the standalone suite: the admin and, under it, the reports."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    # Before the admin, whose catch-all would answer these URLs with a 404.
    path("admin/ftp-reports/", include("ftpadmin.report_urls")),
    path("admin/", admin.site.urls),
]
