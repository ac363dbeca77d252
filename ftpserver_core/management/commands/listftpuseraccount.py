from django.core.management.base import BaseCommand

from ftpserver_core.models import FTPUserAccount
from ftpserver_core.policy import LoginRefused, resolve_policy


class Command(BaseCommand):
    help = "List the FTP accounts with their effective home and permission."

    def handle(self, *args, **options):
        accounts = FTPUserAccount.objects.select_related(
            "user", "group__home_directory", "home_directory"
        )
        self.stdout.write(
            f"{'USERNAME':<24} {'GROUP':<16} {'ENABLED':<7} {'PERMISSION':<11} HOME"
        )
        for account in accounts:
            try:
                policy = resolve_policy(account)
                perm, home = policy.permission, policy.home
            except LoginRefused as exc:
                perm, home = account.permission or "-", f"({exc.detail or exc.reason})"
            self.stdout.write(
                f"{account.get_username():<24} "
                f"{account.group.name if account.group else '-':<16} "
                f"{'yes' if account.is_enabled else 'no':<7} {perm:<11} {home}"
            )
