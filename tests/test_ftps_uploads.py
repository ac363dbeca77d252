"""Many uploads through real clients: every stored file must be whole.

lftp and curl upload over FTPS (TLS required, PROT P) and lftp over plain
FTP; each stored file is compared byte for byte with its source, and each
upload's ``ftp_file_received`` signal must carry the real file size.
"""

import os
import random
import subprocess

import pytest

from tests.certs import make_certificate
from tests.conftest import PASSWORD
from tests.transfer_tools import run_lftp

CURL = "/usr/bin/curl"
LFTP = "/usr/bin/lftp"
# Fail fast instead of lftp's endless reconnecting; any failed command exits
# non-zero. No pause before a reconnect: a server that aborts many transfers
# must not make a test wait a second for each. (mirror may still send a
# failed file again: the ftp_file_received_incomplete check catches that.)
LFTP_SETTINGS = (
    "set cmd:fail-exit yes; set net:max-retries 1; set net:timeout 10; "
    "set net:reconnect-interval-base 0; set net:reconnect-interval-max 0; "
    "set xfer:clobber yes; "
)
LFTP_PLAIN = LFTP_SETTINGS + "set ftp:ssl-allow no; "
LFTP_TLS = (
    LFTP_SETTINGS + "set ftp:ssl-force true; set ftp:ssl-protect-data true; "
    "set ssl:verify-certificate no; "
)
FILE_COUNT = 200
MAX_SIZE = 300_000


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory):
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_live(ftp_server, tls_cert):
    """A server with TLS on and required (the default TLS_REQUIRED=True)."""
    live = ftp_server(certfile=tls_cert.certfile, keyfile=tls_cert.keyfile)
    assert live.options.tls and live.options.tls_required
    return live


def lftp(live, script, settings):
    return run_lftp(live, script, settings, "alice", PASSWORD)


def write_files(root, names, rng, min_size=1, max_size=MAX_SIZE):
    """Write a file of random bytes and size for each name; return {name: bytes}."""
    files = {}
    for name in names:
        data = rng.randbytes(rng.randint(min_size, max_size))
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
        files[name] = data
    return files


def damaged(directory, expected):
    """Return (name, size, stored size or None) of every stored file not whole."""
    bad = []
    for name, data in sorted(expected.items()):
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            bad.append((name, len(data), None))
            continue
        with open(path, "rb") as fh:
            stored = fh.read()
        if stored != data:
            bad.append((name, len(data), len(stored)))
    return bad


def stored_names(directory):
    names = set()
    for dirpath, _, filenames in os.walk(directory):
        rel = os.path.relpath(dirpath, directory)
        names.update(os.path.normpath(os.path.join(rel, n)) for n in filenames)
    return names


def assert_uploaded(recorder, home, ftp_dir, expected, tls):
    """Every file stored whole under ``ftp_dir``, and signalled with its real size.

    One ftp_file_received per upload (none incomplete), each with the size of
    the client's file: the audit trail must not record a cut file as whole.
    """
    directory = os.path.join(home, ftp_dir.lstrip("/"))
    stored = stored_names(directory)
    missing, extra = sorted(set(expected) - stored), sorted(stored - set(expected))
    assert not missing and not extra, (
        f"{len(missing)} of {len(expected)} files not stored: {missing[:5]}; "
        f"unexpected files: {extra[:5]}"
    )
    bad = damaged(directory, expected)
    received = recorder.wait_for("ftp_file_received", len(expected), timeout=20)
    sizes = {event["ftp_path"]: event["size"] for event in received}
    wrong = sorted(
        (name, len(data), sizes.get(f"{ftp_dir}/{name}"))
        for name, data in expected.items()
        if sizes.get(f"{ftp_dir}/{name}") != len(data)
    )
    assert not bad and not wrong, (
        f"{len(bad)} of {len(expected)} stored files are not whole, "
        f"(name, size, stored size): {bad[:5]}; "
        f"{len(wrong)} ftp_file_received signals have another size than the "
        f"file, (name, size, signalled size): {wrong[:5]}"
    )
    assert len(received) == len(expected)
    assert {event["tls"] for event in received} == {tls}
    incomplete = [
        (event["ftp_path"], event["size"])
        for event in recorder.of("ftp_file_received_incomplete")
    ]
    assert not incomplete, (
        f"{len(incomplete)} uploads failed on the way, (path, size): {incomplete[:5]}"
    )


def tree_names(count):
    """Names spread over a few subdirectories, as a project tree would be."""
    return [f"d{i % 4}/file{i:03d}.bin" for i in range(count)]


# --- lftp over FTPS


def test_lftp_put_many_over_tls(tls_live, make_account, tmp_path, recorder):
    account = make_account("alice")
    rng = random.Random(201)
    names = [f"put{i:02d}.bin" for i in range(40)]
    files = write_files(tmp_path / "src", names, rng, 200_000, 200_000)

    script = "; ".join(f"put {tmp_path / 'src' / name} -o {name}" for name in names)
    done = lftp(tls_live, script, LFTP_TLS)
    assert done.returncode == 0, done.stderr

    assert_uploaded(recorder, account.home_path, "", files, tls=True)


def test_lftp_mirror_reverse_over_tls(tls_live, make_account, tmp_path, recorder):
    account = make_account("alice")
    rng = random.Random(202)
    files = write_files(tmp_path / "src", tree_names(FILE_COUNT), rng)

    done = lftp(tls_live, f"mirror -R {tmp_path / 'src'} dst", LFTP_TLS)
    assert done.returncode == 0, done.stderr

    assert_uploaded(recorder, account.home_path, "/dst", files, tls=True)


# --- curl over FTPS


def test_curl_uploads_over_tls(tls_live, make_account, tmp_path, recorder):
    account = make_account("alice")
    rng = random.Random(203)
    names = [f"file{i:03d}.bin" for i in range(FILE_COUNT)]
    files = write_files(tmp_path / "src", names, rng)

    # One curl run: -T with a {a,b,...} glob uploads every file in turn,
    # each under its own name in the directory the URL ends with.
    # --fail-early: else curl's exit status is only the last upload's.
    done = subprocess.run(
        [
            CURL,
            "--silent",
            "--show-error",
            "--max-time",
            "60",
            "--fail-early",
            "--ssl-reqd",
            "-k",
            "--ftp-create-dirs",
            "-u",
            f"alice:{PASSWORD}",
            "-T",
            f"{tmp_path / 'src'}/{{{','.join(names)}}}",
            f"ftp://127.0.0.1:{tls_live.port}/dst/",
        ],
        capture_output=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr

    assert_uploaded(recorder, account.home_path, "/dst", files, tls=True)


# --- lftp over plain FTP


def test_lftp_mirror_reverse_plain(live_ftp, make_account, tmp_path, recorder):
    account = make_account("alice")
    rng = random.Random(204)
    files = write_files(tmp_path / "src", tree_names(FILE_COUNT), rng)

    done = lftp(live_ftp, f"mirror -R {tmp_path / 'src'} dst", LFTP_PLAIN)
    assert done.returncode == 0, done.stderr

    assert_uploaded(recorder, account.home_path, "/dst", files, tls=False)
