from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from ftpserver_core.models import FTPUserGroup

from ._ftpusers import clean_permission, home_directory


class Command(BaseCommand):
    help = "Create an FTP user group."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument(
            "home_dir",
            nargs="?",
            help="Home directory template, e.g. /srv/ftp/{username}.",
        )
        parser.add_argument(
            "--permission",
            default="elr",
            help="Permission letters from elradfmwMT (default: elr).",
        )
        parser.add_argument("--description", default="")

    @transaction.atomic
    def handle(self, *args, name, home_dir, permission, description, **options):
        permission = clean_permission(permission)
        if FTPUserGroup.objects.filter(name=name).exists():
            raise CommandError(f"FTP group {name!r} already exists.")
        group = FTPUserGroup.objects.create(
            name=name,
            permission=permission,
            home_directory=home_directory(home_dir),
            description=description,
        )
        self.stdout.write(
            f"Created FTP group {group.name!r} (permission {permission!r})."
        )
