from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from ftpserver_core.models import FTPUserAccount


class Command(BaseCommand):
    help = "Delete an FTP account (the Django user stays unless --delete-user)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--delete-user", action="store_true", help="Delete the Django user as well."
        )

    def handle(self, *args, username, delete_user, **options):
        user_model = get_user_model()
        try:
            account = FTPUserAccount.objects.select_related("user").get(
                **{"user__" + user_model.USERNAME_FIELD: username}
            )
        except FTPUserAccount.DoesNotExist:
            raise CommandError(f"FTP account {username!r} does not exist.") from None
        if delete_user:
            account.user.delete()
        else:
            account.delete()
        self.stdout.write(
            f"Deleted FTP account {username!r}{' and its user' if delete_user else ''}."
        )
