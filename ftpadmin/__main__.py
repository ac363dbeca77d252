"""The ``ftpadmin`` console script: the suite's manage.py."""

import os
import sys

# Commands that need only the FTP server's apps (ftpadmin.settings reads
# FTPADMIN_ROLE before Django sets up: see ROLE there).
FTP_COMMANDS = {"ftpserver"}


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ftpadmin.settings")
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command in FTP_COMMANDS:
        # FTPADMIN_ROLE=all given by hand keeps every app (a handler of the
        # project's that needs them).
        os.environ.setdefault("FTPADMIN_ROLE", "ftp")
    else:
        # migrate, check and the admin's commands need every app, whatever
        # the environment meant for the FTP server.
        os.environ["FTPADMIN_ROLE"] = "all"
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
