from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class FTPAdminConfig(AppConfig):
    name = "ftpadmin"
    verbose_name = _("FTP administration")
