import secrets
import threading
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.core.servers.basehttp import WSGIRequestHandler, WSGIServer
from django.core.wsgi import get_wsgi_application
from django.db import transaction
from django.urls import NoReverseMatch, reverse

from ftpserver_core.models import (
    FTPUserAccount,
    FTPUserGroup,
    HomeDirectory,
    validate_path_template,
)
from ftpserver_core.options import BIND_ERRORS, OptionError, parse_address


class QuietRequestHandler(WSGIRequestHandler):
    """Log nothing per request: the FTP server's banner stays readable."""

    def log_message(self, format, *args):
        pass


class Command(BaseCommand):
    help = (
        "Migrate the database, create an admin user and a demo FTP account with "
        "fresh random passwords (printed once), then serve the FTP server and "
        "the admin together until Ctrl-C."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--ftp",
            default="127.0.0.1:2121",
            help="FTP server address (default 127.0.0.1:2121).",
        )
        parser.add_argument(
            "--admin",
            default="127.0.0.1:8000",
            help="Admin web address (default 127.0.0.1:8000).",
        )
        parser.add_argument(
            "--username",
            default="demo",
            help="The demo FTP account's name (default demo).",
        )
        parser.add_argument(
            "--admin-username",
            default="admin",
            help="The admin user's name (default admin).",
        )
        parser.add_argument(
            "--data-dir",
            help="Directory of the demo homes (ftp/ in it). Default: the "
            "DATA_DIR setting (the suite's FTPADMIN_DATA_DIR), else BASE_DIR/var.",
        )
        parser.add_argument(
            "--no-serve",
            action="store_true",
            help="Set up only; do not start the servers.",
        )

    def handle(
        self, *args, ftp, admin, username, admin_username, no_serve, data_dir, **options
    ):
        self.data_dir = self.find_data_dir(data_dir)
        try:
            admin_host, admin_port = parse_address(admin, "127.0.0.1")
        except OptionError as exc:
            raise CommandError(f"--admin: {exc.message}") from None
        call_command("migrate", interactive=False, verbosity=0)
        admin_password = secrets.token_urlsafe(12)
        ftp_password = secrets.token_urlsafe(12)
        self.setup(admin_username, admin_password, username, ftp_password)
        httpd = None if no_serve else self.start_admin(admin_host, admin_port)
        shown = f"[{admin_host}]" if ":" in admin_host else admin_host
        self.stdout.write(
            self.style.SUCCESS(
                f"Admin: http://{shown}:{admin_port}{self.admin_path()} user "
                f"{admin_username!r}, "
                f"password {admin_password!r}\n"
                f"Demo FTP account: user {username!r}, password {ftp_password!r} "
                f"(home under {self.data_dir / 'ftp'})\n"
                "These passwords are shown once; run quickstart again for new ones."
            )
        )
        if httpd is None:
            return
        try:
            call_command("ftpserver", ftp)
        finally:
            httpd.shutdown()
            httpd.server_close()

    @staticmethod
    def admin_path():
        """The admin's URL path in this project (a host project may mount it anywhere)."""
        try:
            return reverse("admin:index")
        except NoReverseMatch:
            return "/admin/"

    @staticmethod
    def find_data_dir(given):
        """Return the directory of the demo homes: the option, DATA_DIR, BASE_DIR/var.

        A project that installs the apps has no DATA_DIR (the suite's
        setting); startproject gives it a BASE_DIR.
        """
        if given:
            return Path(given).resolve()
        if getattr(settings, "DATA_DIR", None):
            return Path(settings.DATA_DIR)
        if getattr(settings, "BASE_DIR", None):
            return Path(settings.BASE_DIR) / "var"
        raise CommandError(
            "quickstart needs a directory for the demo homes and this project's "
            "settings name none (no DATA_DIR nor BASE_DIR); give one with "
            "--data-dir, e.g. --data-dir /srv/ftpsuite."
        )

    def start_admin(self, host, port):
        """Serve the admin (and its static files) in a background thread."""
        try:
            httpd = WSGIServer((host, port), QuietRequestHandler, ipv6=":" in host)
        except OSError as exc:
            raise CommandError(
                f"Admin at {host}:{port}: {BIND_ERRORS.get(exc.errno, exc.strerror)}"
            ) from None
        # StaticFilesHandler serves the admin's CSS with DEBUG off, as
        # ``runserver --insecure`` does: fine for a local quickstart.
        httpd.set_app(StaticFilesHandler(get_wsgi_application()))
        threading.Thread(
            target=httpd.serve_forever, name="admin-http", daemon=True
        ).start()
        return httpd

    @transaction.atomic
    def setup(self, admin_username, admin_password, username, password):
        admin = self._user(admin_username)
        admin.is_staff = admin.is_superuser = True
        admin.set_password(admin_password)
        admin.save()

        template = str(self.data_dir / "ftp" / "{username}")
        try:
            validate_path_template(template)
        except ValidationError as exc:
            root = self.data_dir / "ftp"
            raise CommandError(
                f"The demo homes would be in {str(root)!r}, where the FTP server "
                f"refuses homes ({' '.join(exc.messages)}). Run quickstart from "
                "another directory, give --data-dir or set FTPADMIN_DATA_DIR (e.g. "
                "/srv/ftpsuite), "
                f"or name it a home root: FTPSERVER_HOME_ROOTS={root}"
            ) from None
        home, _ = HomeDirectory.objects.get_or_create(
            path=template,
            defaults={"name": "demo homes", "create_on_login": True},
        )
        group, _ = FTPUserGroup.objects.get_or_create(
            name="demo",
            defaults={"permission": "elradfmwMT", "home_directory": home},
        )
        user = self._user(username)
        user.set_password(password)
        user.save()
        FTPUserAccount.objects.get_or_create(user=user, defaults={"group": group})

    @staticmethod
    def _user(username):
        user_model = get_user_model()
        try:
            return user_model._default_manager.get_by_natural_key(username)
        except user_model.DoesNotExist:
            return user_model(**{user_model.USERNAME_FIELD: username})
