import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction

from ftpserver_core.models import FTPUserAccount, FTPUserGroup, HomeDirectory


class Command(BaseCommand):
    help = (
        "Migrate the database, create a demo FTP account with a fresh random "
        "password (printed once) and start the FTP server."
    )

    def add_arguments(self, parser):
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:2121")
        parser.add_argument("--username", default="demo")
        parser.add_argument(
            "--no-serve",
            action="store_true",
            help="Set up only; do not start the server.",
        )

    def handle(self, *args, addrport, username, no_serve, **options):
        call_command("migrate", interactive=False, verbosity=0)
        password = secrets.token_urlsafe(12)
        self.setup_demo(username, password)
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo FTP account: user {username!r}, password {password!r} "
                f"(home under {settings.DATA_DIR / 'ftp'})."
            )
        )
        if not no_serve:
            call_command("ftpserver", addrport)

    @transaction.atomic
    def setup_demo(self, username, password):
        home, _ = HomeDirectory.objects.get_or_create(
            path=str(settings.DATA_DIR / "ftp" / "{username}"),
            defaults={"name": "demo homes", "create_on_login": True},
        )
        group, _ = FTPUserGroup.objects.get_or_create(
            name="demo",
            defaults={"permission": "elradfmwMT", "home_directory": home},
        )
        user_model = get_user_model()
        try:
            user = user_model._default_manager.get_by_natural_key(username)
        except user_model.DoesNotExist:
            user = user_model(**{user_model.USERNAME_FIELD: username})
        user.set_password(password)
        user.save()
        FTPUserAccount.objects.get_or_create(user=user, defaults={"group": group})
