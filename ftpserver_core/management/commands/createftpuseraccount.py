import sys

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from ftpserver_core.models import FTPUserAccount, FTPUserGroup

from ._ftpusers import clean_permission, home_directory


class Command(BaseCommand):
    help = (
        "Create an FTP account for a Django user. With --create-user the user is "
        "created too; its password is read from standard input, never from the "
        "command line."
    )

    def add_arguments(self, parser):
        # "--password" must not pass as an abbreviation of --password-stdin.
        parser.allow_abbrev = False
        parser.add_argument("username")
        parser.add_argument("group", help="FTP group name ('-' for none).")
        parser.add_argument(
            "home_dir",
            nargs="?",
            help="Own home directory template (default: the group's).",
        )
        parser.add_argument(
            "--permission",
            default="",
            help="Own permission letters (default: the group's).",
        )
        parser.add_argument(
            "--create-user", action="store_true", help="Create the Django user too."
        )
        parser.add_argument(
            "--password-stdin",
            action="store_true",
            help="Read the password from the first line of standard input.",
        )

    def read_password(self):
        if sys.stdin.isatty():
            import getpass

            password = getpass.getpass("Password: ")
            if password != getpass.getpass("Password (again): "):
                raise CommandError("The passwords do not match.")
        else:
            password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise CommandError("The password is empty; give one on standard input.")
        return password

    @transaction.atomic
    def handle(
        self,
        *args,
        username,
        group,
        home_dir,
        permission,
        create_user,
        password_stdin,
        **options,
    ):
        if permission:
            clean_permission(permission)
        user_model = get_user_model()
        ftp_group = None
        if group != "-":
            try:
                ftp_group = FTPUserGroup.objects.get(name=group)
            except FTPUserGroup.DoesNotExist:
                raise CommandError(
                    f"FTP group {group!r} does not exist; create it with "
                    f"createftpusergroup, or pass '-' for no group."
                ) from None
        try:
            user = user_model._default_manager.get_by_natural_key(username)
        except user_model.DoesNotExist:
            user = None
        if create_user:
            if user is not None:
                raise CommandError(
                    f"User {username!r} already exists; omit --create-user."
                )
            password = self.read_password()
            user = user_model(**{user_model.USERNAME_FIELD: username})
            try:
                validate_password(password, user)
            except ValidationError as exc:
                raise CommandError(
                    "Password refused: " + " ".join(exc.messages)
                ) from None
            user.set_password(password)
            user.save()
        elif user is None:
            raise CommandError(
                f"User {username!r} does not exist; add --create-user to create it."
            )
        elif password_stdin:
            user.set_password(self.read_password())
            user.save(update_fields=["password"])
        if FTPUserAccount.objects.filter(user=user).exists():
            raise CommandError(f"User {username!r} already has an FTP account.")
        account = FTPUserAccount.objects.create(
            user=user,
            group=ftp_group,
            home_directory=home_directory(home_dir),
            permission=permission,
        )
        self.stdout.write(
            f"Created FTP account {account.get_username()!r}"
            f"{' in group ' + repr(ftp_group.name) if ftp_group else ''}."
        )
