"""The smallest Django project the documentation build imports the apps with."""

SECRET_KEY = "documentation-build-only"  # noqa: S105 (no site runs on it)
INSTALLED_APPS = [
    "ftpadmin",
    "ftpserver_core",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "import_export",
    "django_filters",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
STATIC_URL = "static/"
