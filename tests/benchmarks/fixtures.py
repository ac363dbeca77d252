"""Create the benchmark accounts (probe, u0..uN-1) with the default hasher.

usage: python -m tests.benchmarks.fixtures ROOT N_USERS
"""

import os
import sys
from concurrent.futures import ThreadPoolExecutor

import django


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.benchmarks.settings")
    django.setup()
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.core.management import call_command

    from ftpserver_core.models import FTPUserAccount, FTPUserGroup, HomeDirectory

    root, n_users = sys.argv[1], int(sys.argv[2])
    call_command("migrate", verbosity=0)
    names = ["probe"] + [f"u{i}" for i in range(n_users)]
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        hashes = list(pool.map(lambda n: make_password("pw-" + n), names))
    home, _ = HomeDirectory.objects.get_or_create(path=os.path.join(root, "{username}"))
    group, _ = FTPUserGroup.objects.get_or_create(
        name="bench", defaults={"permission": "elradfmwMT", "home_directory": home}
    )
    user_model = get_user_model()
    for name, hashed in zip(names, hashes, strict=True):
        user, _ = user_model.objects.update_or_create(
            username=name, defaults={"password": hashed}
        )
        FTPUserAccount.objects.get_or_create(user=user, defaults={"group": group})
    print(f"{len(names)} accounts ready")


if __name__ == "__main__":
    main()
