"""Recompute accounts' quota usage from what their homes hold on disk."""

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from ftpserver_core.models import FTPUserAccount
from ftpserver_core.policy import LoginRefused, resolve_policy
from ftpserver_core.quotas import format_size, scan_home
from ftpserver_core.state.database import DatabaseBackend


class Command(BaseCommand):
    help = (
        "Recompute the quota usage (bytes and regular files) of FTP accounts "
        "from their home directories: after files changed outside FTP, or a "
        "quota was set on an account that already holds files. Every account "
        "when no user name is given."
    )

    def add_arguments(self, parser):
        parser.add_argument("usernames", nargs="*", metavar="USER")
        parser.add_argument(
            "--all",
            action="store_true",
            help="Scan every account (the default when no user name is given).",
        )

    def handle(self, *args, usernames, all, **options):
        accounts = FTPUserAccount.objects.select_related(
            "user", "group", "home_directory", "group__home_directory"
        ).order_by("pk")
        field = "user__" + get_user_model().USERNAME_FIELD
        if usernames and not all:
            found = {
                a.get_username(): a
                for a in accounts.filter(**{f"{field}__in": usernames})
            }
            missing = [name for name in usernames if name not in found]
            if missing:
                raise CommandError(
                    "No FTP account named "
                    + ", ".join(repr(name) for name in missing)
                    + "; expected the user names of existing FTP accounts."
                )
            accounts = [found[name] for name in dict.fromkeys(usernames)]
        backend = DatabaseBackend()
        failed = []
        for account in accounts:
            username = account.get_username()
            try:
                home = resolve_policy(account).home
                # A home not created yet (no login so far) holds nothing.
                exists = os.path.lexists(home)
                used_bytes, used_files = scan_home(home) if exists else (0, 0)
            except (LoginRefused, OSError) as exc:
                detail = getattr(exc, "detail", "") or exc
                self.stderr.write(f"{username}: cannot scan its home: {detail}")
                failed.append(username)
                continue
            old = backend.quota_usage(account.pk)
            backend.set_quota_usage(account.pk, used_bytes, used_files)
            self.stdout.write(
                f"{username}: {format_size(old[0])}, {old[1]} files -> "
                f"{format_size(used_bytes)}, {used_files} files ({used_bytes} bytes)"
            )
        if failed:
            raise CommandError(
                f"{len(failed)} account(s) not scanned: {', '.join(map(repr, failed))}."
            )
