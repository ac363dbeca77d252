"""A project's URLconf that includes the reports as README.rst says."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("backoffice/ftp/", include("ftpadmin.report_urls")),
    path("backoffice/", admin.site.urls),
]
