from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class FTPServerCoreConfig(AppConfig):
    name = "ftpserver_core"
    verbose_name = _("FTP server")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from . import checks, receivers  # noqa: F401  (checks register on import)

        receivers.connect()
