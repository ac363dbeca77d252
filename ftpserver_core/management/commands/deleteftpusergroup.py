from django.core.management.base import BaseCommand, CommandError

from ftpserver_core.models import FTPUserGroup


class Command(BaseCommand):
    help = "Delete an FTP user group that has no accounts."

    def add_arguments(self, parser):
        parser.add_argument("name")

    def handle(self, *args, name, **options):
        try:
            group = FTPUserGroup.objects.get(name=name)
        except FTPUserGroup.DoesNotExist:
            raise CommandError(f"FTP group {name!r} does not exist.") from None
        members = list(group.accounts.select_related("user")[:6])
        if members:
            names = ", ".join(repr(a.get_username()) for a in members[:5])
            raise CommandError(
                f"FTP group {name!r} still has accounts ({names}"
                f"{', ...' if len(members) > 5 else ''}); move or delete them first."
            )
        group.delete()
        self.stdout.write(f"Deleted FTP group {name!r}.")
