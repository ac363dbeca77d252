"""The benchmark accounts: probe and u0..uN-1, password ``pw-<name>``.

Their PBKDF2 hashes (Django's default hasher and iterations) are made once by
:func:`make_hashes`, kept in the temp dir for the next run, and given to every
server that uses Django (ours on each database, django-ftpserver).

usage: python -m tests.benchmarks.fixtures ROOT HASHES_JSON
(migrates and creates the accounts of our server in DATABASE_URL's database,
homes under ROOT/{username}, group permission elradfmwMT)
"""

import json
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import django

# An account with a quota too large to be reached (1 TiB, 10**9 files): the
# quota probe's "on", the probe account's "off". Its usage is not rescanned:
# the files smallops writes straight into the home and deletes over FTP take
# it below zero, which costs the checks nothing more or less.
QUOTA_USER = "quota"
QUOTA_BYTES = 1 << 40
QUOTA_FILES = 10**9


def account_names(n_users):
    return ["probe", QUOTA_USER] + [f"u{i}" for i in range(n_users)]


def password(name):
    return "pw-" + name


def make_hashes(names):
    """Return {name: Django PBKDF2 hash of its password}, cached across runs."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    hasher = PBKDF2PasswordHasher()
    cache = Path(tempfile.gettempdir()) / (
        f"ftpsuite_bench_hashes-{hasher.algorithm}-{hasher.iterations}.json"
    )
    try:
        hashes = json.loads(cache.read_text())
    except (OSError, ValueError):
        hashes = {}
    missing = [n for n in names if n not in hashes]
    if missing:
        # PBKDF2 releases the GIL: one thread per core.
        with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
            made = pool.map(
                lambda n: hasher.encode(password(n), hasher.salt()), missing
            )
            hashes.update(zip(missing, made, strict=True))
        cache.write_text(json.dumps(hashes))
    return {n: hashes[n] for n in names}


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.benchmarks.settings")
    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from ftpserver_core.models import FTPUserAccount, FTPUserGroup, HomeDirectory

    root, hashes = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
    call_command("migrate", verbosity=0)
    home, _ = HomeDirectory.objects.get_or_create(path=os.path.join(root, "{username}"))
    group, _ = FTPUserGroup.objects.get_or_create(
        name="bench", defaults={"permission": "elradfmwMT", "home_directory": home}
    )
    user_model = get_user_model()
    for name, hashed in hashes.items():
        user, _ = user_model.objects.update_or_create(
            username=name, defaults={"password": hashed}
        )
        limits = {}
        if name == QUOTA_USER:
            limits = {"quota_bytes": QUOTA_BYTES, "quota_files": QUOTA_FILES}
        FTPUserAccount.objects.update_or_create(
            user=user, defaults={"group": group, **limits}
        )
        os.makedirs(os.path.join(root, name), exist_ok=True)
    print(f"{len(hashes)} accounts ready")


if __name__ == "__main__":
    main()
