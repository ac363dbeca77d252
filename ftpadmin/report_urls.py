"""URLs of the reports, to include next to the admin (namespace ``ftpadmin``).

In a project that installs ``ftpserver_core`` and ``ftpadmin``, before the
admin's own line::

    path("admin/ftp-reports/", include("ftpadmin.report_urls")),
    path("admin/", admin.site.urls),
"""

from django.urls import path

from ftpadmin import views

app_name = "ftpadmin"

urlpatterns = [
    path("transfers/", views.transfers_report, name="transfers"),
    path("transfers/csv/", views.transfers_csv, name="transfers_csv"),
    path("transfers/csv-excel/", views.transfers_excel_csv, name="transfers_excel_csv"),
    path("transfers/xferlog/", views.transfers_xferlog, name="transfers_xferlog"),
]
