"""Three parallel sessions of one account against its bandwidth limit, over 30 s.

usage: python -m tests.benchmarks.bandwidth [--seconds 30] [--limit BYTES]
       [--direction download|upload] [--layout processes|workers]

Migrates the database of DATABASE_URL (default: a new SQLite file in a temp
directory), creates one account limited to ``--limit`` bytes/s, starts
``manage.py ftpserver`` and moves ``limit * seconds`` bytes in three
parallel sessions, then prints the combined rate and its ratio to the limit
(the check: within 15%). ``--layout processes`` (default) runs two server
processes on the one database, two sessions on the first and one on the
second: the split between processes is exercised for sure;
``--layout workers`` one server with ``--workers 2`` (the kernel decides
which worker takes which session).
"""

import argparse
import io
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

KIB = 1024


def setup_django(tmp):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{tmp / 'bandwidth.sqlite3'}")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def make_account(tmp, direction, limit):
    from django.contrib.auth import get_user_model

    from ftpserver_core.models import FTPUserAccount, HomeDirectory

    name = f"bw{os.getpid()}"
    user = get_user_model().objects.create_user(username=name, password="pw-" + name)
    home, _ = HomeDirectory.objects.get_or_create(
        path=str(tmp / "homes" / "{username}")
    )
    field = "download_rate" if direction == "download" else "upload_rate"
    account = FTPUserAccount.objects.create(
        user=user, home_directory=home, permission="elradfmwMT", **{field: limit}
    )
    path = tmp / "homes" / name
    path.mkdir(parents=True, exist_ok=True)
    return account, name, path


def transfer(ftp, direction, name, size):
    if direction == "download":
        received = 0

        def count(data):
            nonlocal received
            received += len(data)

        reply = ftp.retrbinary(f"RETR {name}", count)
        moved = received
    else:
        reply = ftp.storbinary(f"STOR {name}", io.BytesIO(b"u" * size))
        moved = size
    if not reply.startswith("226"):
        raise RuntimeError(f"{direction} of {name} ended with {reply!r}")
    return moved


def run(args):
    tmp = Path(tempfile.mkdtemp(prefix="ftpsuite-bandwidth-"))
    servers = []
    account = None
    try:
        setup_django(tmp)
        from tests.processes import ServerProcess, command_env

        account, name, home = make_account(tmp, args.direction, args.limit)
        size = args.limit * args.seconds // 3
        for i in range(3):
            (home / f"f{i}").write_bytes(bytes(range(256)) * (size // 256))
        size = size // 256 * 256
        env = command_env()
        if args.layout == "processes":
            for i in range(2):
                servers.append(
                    ServerProcess(
                        ["127.0.0.1:0"], tmp / f"server{i}", env
                    ).wait_started()
                )
            placement = [servers[0], servers[0], servers[1]]
        else:
            servers.append(
                ServerProcess(
                    ["127.0.0.1:0", "--workers", "2"], tmp / "server", env
                ).wait_started()
            )
            placement = [servers[0]] * 3
        clients = [s.client(name, "pw-" + name, timeout=60) for s in placement]
        results, errors = [0, 0, 0], []

        def job(i):
            try:
                results[i] = transfer(clients[i], args.direction, f"f{i}", size)
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=job, args=(i,)) for i in range(3)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        for ftp in clients:
            ftp.quit()
        if errors:
            raise SystemExit(f"transfers failed: {errors}")
        total = sum(results)
        rate = total / elapsed
        ratio = rate / args.limit
        within = abs(ratio - 1) <= 0.15
        print(
            f"{args.direction}, 3 sessions ({args.layout}), "
            f"{os.environ['DATABASE_URL'].split(':')[0]}: "
            f"{total} bytes in {elapsed:.2f} s = {rate / KIB:.1f} KiB/s "
            f"for a limit of {args.limit / KIB:.1f} KiB/s: {ratio:.3f}x "
            f"({'within' if within else 'NOT within'} 15%)"
        )
        return 0 if within else 1
    finally:
        for server in servers:
            server.kill()
        if account is not None:
            user = account.user
            account.delete()
            user.delete()
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--limit", type=int, default=1024 * KIB, help="bytes/s")
    parser.add_argument(
        "--direction", choices=("download", "upload"), default="download"
    )
    parser.add_argument(
        "--layout", choices=("processes", "workers"), default="processes"
    )
    parser.add_argument("--keep-tmp", action="store_true")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
