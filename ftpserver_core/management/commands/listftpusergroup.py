from django.core.management.base import BaseCommand
from django.db.models import Count

from ftpserver_core.models import FTPUserGroup


class Command(BaseCommand):
    help = "List the FTP user groups."

    def handle(self, *args, **options):
        # Meta.ordering is ignored by aggregation queries: order explicitly.
        groups = (
            FTPUserGroup.objects.select_related("home_directory")
            .annotate(n_accounts=Count("accounts"))
            .order_by("name")
        )
        self.stdout.write(f"{'NAME':<24} {'PERMISSION':<11} {'ACCOUNTS':>8}  HOME")
        for group in groups:
            home = group.home_directory.path if group.home_directory else "-"
            self.stdout.write(
                f"{group.name:<24} {group.permission:<11} {group.n_accounts:>8}  {home}"
            )
