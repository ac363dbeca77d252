"""URLs of the standalone suite: the admin and, under it, the reports."""

from django.contrib import admin
from django.urls import include, path
from django.utils.translation import gettext_lazy as _
from django.views.generic import RedirectView

# The admin is the whole of the standalone suite: no "View site" link (it
# would lead to a page of nothing), the suite's name in every header, and
# the bare address leads to the admin.
admin.site.site_url = None
admin.site.site_header = _("FTP server administration")
admin.site.site_title = _("FTP server admin")

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index")),
    # Before the admin, whose catch-all would answer these URLs with a 404.
    path("admin/ftp-reports/", include("ftpadmin.report_urls")),
    path("admin/", admin.site.urls),
]
