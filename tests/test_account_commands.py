"""The FTP account management commands: create, list and delete groups and accounts."""

import ftplib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from ftpserver_core.models import FTPUserAccount, FTPUserGroup, HomeDirectory

from .conftest import PASSWORD, database_url

REPO_ROOT = Path(__file__).resolve().parent.parent
User = get_user_model()


def run(*args, **options):
    """Run a command in-process; return its stdout."""
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO(), **options)
    return out.getvalue()


def run_subprocess(*args, input=None):
    """Run ``python -m django ARGS`` against the test database."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(REPO_ROOT),
        "DATABASE_URL": database_url(),
    }
    return subprocess.run(
        [sys.executable, "-m", "django", *args],
        input=input,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=60,
    )


@pytest.fixture
def stdin(monkeypatch):
    """Feed lines to the command's standard input (a pipe, not a terminal)."""

    def feed(text):
        monkeypatch.setattr(sys, "stdin", io.StringIO(text))

    return feed


# --- createftpusergroup


@pytest.mark.django_db
def test_create_group_with_home_and_permission(tmp_path):
    home = str(tmp_path / "{group}" / "{username}")
    out = run("createftpusergroup", "staff", home, "--permission", "elradfmw")
    assert out.strip() == "Created FTP group 'staff' (permission 'elradfmw')."
    group = FTPUserGroup.objects.get(name="staff")
    assert group.permission == "elradfmw"
    assert group.home_directory.path == home


@pytest.mark.django_db
def test_create_group_defaults():
    run("createftpusergroup", "readers", description="Read only")
    group = FTPUserGroup.objects.get(name="readers")
    assert group.permission == "elr"
    assert group.home_directory is None
    assert group.description == "Read only"
    assert HomeDirectory.objects.count() == 0


@pytest.mark.django_db
def test_groups_share_a_home_directory_row():
    run("createftpusergroup", "a", "/srv/ftp/{username}")
    run("createftpusergroup", "b", "/srv/ftp/{username}")
    assert HomeDirectory.objects.count() == 1
    assert (
        FTPUserGroup.objects.filter(home_directory__path="/srv/ftp/{username}").count()
        == 2
    )


@pytest.mark.django_db
def test_create_group_twice():
    run("createftpusergroup", "staff", "--permission", "elr")
    with pytest.raises(CommandError) as info:
        run("createftpusergroup", "staff", "--permission", "elradfmw")
    assert str(info.value) == "FTP group 'staff' already exists."
    assert FTPUserGroup.objects.get(name="staff").permission == "elr"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("permission", "message"),
    [
        ("xyz", "Unknown permission letter(s) 'x', 'y', 'z' in 'xyz'"),
        ("elrq", "Unknown permission letter(s) 'q' in 'elrq'"),
        ("ELR", "'ELR'"),
        ("eel", "Permission 'eel' repeats a letter."),
    ],
)
def test_create_group_bad_permission(permission, message):
    with pytest.raises(CommandError) as info:
        run("createftpusergroup", "staff", "--permission", permission)
    assert str(info.value).startswith("--permission: ")
    assert message in str(info.value)
    assert not FTPUserGroup.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("home", "message"),
    [
        ("relative/path", "Path 'relative/path' is not absolute"),
        ("srv/{username}", "Path 'srv/{username}' is not absolute"),
        ("/srv/{user}", "'/srv/{user}' has an unknown placeholder"),
    ],
)
def test_create_group_bad_home(home, message):
    with pytest.raises(CommandError) as info:
        run("createftpusergroup", "staff", home)
    assert str(info.value).startswith("HOME_DIR: ")
    assert message in str(info.value)
    assert not FTPUserGroup.objects.exists()
    assert not HomeDirectory.objects.exists()


# --- createftpuseraccount


@pytest.mark.django_db
def test_create_account_for_existing_user():
    User.objects.create_user("bob", password=PASSWORD)
    run("createftpusergroup", "staff", "/srv/ftp/{username}")
    out = run("createftpuseraccount", "bob", "staff")
    assert out.strip() == "Created FTP account 'bob' in group 'staff'."
    account = FTPUserAccount.objects.get(user__username="bob")
    assert account.group.name == "staff"
    assert account.home_directory is None
    assert account.permission == ""
    assert account.is_enabled


@pytest.mark.django_db
def test_create_account_with_own_home_and_permission():
    User.objects.create_user("bob", password=PASSWORD)
    out = run(
        "createftpuseraccount", "bob", "-", "/data/{username}", "--permission", "elr"
    )
    assert out.strip() == "Created FTP account 'bob'."
    account = FTPUserAccount.objects.get(user__username="bob")
    assert account.group is None
    assert account.home_directory.path == "/data/{username}"
    assert account.permission == "elr"


@pytest.mark.django_db
def test_create_account_creates_user_with_password_from_stdin(stdin):
    stdin("pw-from-stdin\n")
    out = run("createftpuseraccount", "carol", "-", "/data/{username}", "--create-user")
    assert "pw-from-stdin" not in out
    user = User.objects.get(username="carol")
    assert user.check_password("pw-from-stdin")
    assert FTPUserAccount.objects.filter(user=user).exists()


@pytest.mark.django_db
def test_create_account_password_stdin_resets_existing_password(stdin):
    User.objects.create_user("bob", password="old-password")
    stdin("new-password\r\n")
    run("createftpuseraccount", "bob", "-", "/data/{username}", "--password-stdin")
    user = User.objects.get(username="bob")
    assert user.check_password("new-password")
    assert not user.check_password("old-password")


@pytest.mark.django_db
def test_create_user_with_empty_password_is_refused(stdin):
    stdin("\n")
    with pytest.raises(CommandError) as info:
        run("createftpuseraccount", "carol", "-", "/data/{username}", "--create-user")
    assert "password is empty" in str(info.value)
    assert not User.objects.filter(username="carol").exists()


@pytest.mark.django_db
def test_password_validators_apply(stdin, settings):
    settings.AUTH_PASSWORD_VALIDATORS = [
        {
            "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
            "OPTIONS": {"min_length": 12},
        }
    ]
    stdin("short\n")
    with pytest.raises(CommandError) as info:
        run("createftpuseraccount", "carol", "-", "/d/{username}", "--create-user")
    assert str(info.value).startswith("Password refused: ")
    assert "at least 12 characters" in str(info.value)
    assert not User.objects.filter(username="carol").exists()


@pytest.mark.django_db
def test_password_is_never_a_command_line_argument():
    with pytest.raises(CommandError) as info:
        run("createftpuseraccount", "carol", "-", "--create-user", "--password", "pw")
    assert "unrecognized arguments" in str(info.value)
    with pytest.raises(TypeError):
        run("createftpuseraccount", "carol", "-", create_user=True, password="pw")
    assert not User.objects.filter(username="carol").exists()


@pytest.mark.django_db
def test_password_as_extra_positional_is_refused(stdin):
    # A password typed where HOME_DIR goes is no absolute path: refused, and
    # the whole command is rolled back.
    stdin("pw\n")
    with pytest.raises(CommandError) as info:
        run("createftpuseraccount", "carol", "-", "hunter2", "--create-user")
    assert str(info.value).startswith("HOME_DIR: Path 'hunter2' is not absolute")
    assert not User.objects.filter(username="carol").exists()
    assert not FTPUserAccount.objects.exists()


@pytest.mark.django_db
def test_create_account_unknown_group():
    User.objects.create_user("bob")
    with pytest.raises(CommandError) as info:
        run("createftpuseraccount", "bob", "nosuchgroup")
    message = str(info.value)
    assert "FTP group 'nosuchgroup' does not exist" in message
    assert "createftpusergroup" in message
    assert not FTPUserAccount.objects.exists()


@pytest.mark.django_db
def test_create_account_missing_user_needs_create_user():
    with pytest.raises(CommandError) as info:
        run("createftpuseraccount", "nobody", "-", "/d/{username}")
    assert str(info.value) == (
        "User 'nobody' does not exist; add --create-user to create it."
    )
    assert not User.objects.exists()


@pytest.mark.django_db
def test_create_user_refuses_existing_user(stdin):
    User.objects.create_user("bob", password="keep-me")
    stdin("other-password\n")
    with pytest.raises(CommandError) as info:
        run("createftpuseraccount", "bob", "-", "/d/{username}", "--create-user")
    assert str(info.value) == "User 'bob' already exists; omit --create-user."
    assert User.objects.get(username="bob").check_password("keep-me")
    assert not FTPUserAccount.objects.exists()


@pytest.mark.django_db
def test_create_account_twice():
    User.objects.create_user("bob")
    run("createftpuseraccount", "bob", "-", "/d/{username}")
    with pytest.raises(CommandError) as info:
        run("createftpuseraccount", "bob", "-", "/e/{username}")
    assert str(info.value) == "User 'bob' already has an FTP account."
    assert FTPUserAccount.objects.get().home_directory.path == "/d/{username}"


@pytest.mark.django_db
def test_create_account_bad_permission():
    User.objects.create_user("bob")
    with pytest.raises(CommandError) as info:
        run("createftpuseraccount", "bob", "-", "--permission", "rwz")
    assert str(info.value).startswith("--permission: ")
    assert "'z'" in str(info.value)
    assert "'rwz'" in str(info.value)
    assert not FTPUserAccount.objects.exists()


@pytest.mark.django_db
def test_create_account_relative_home_rolls_back(stdin):
    stdin("pw\n")
    with pytest.raises(CommandError) as info:
        run("createftpuseraccount", "dave", "-", "relative/path", "--create-user")
    assert "'relative/path' is not absolute" in str(info.value)
    # The user created before HOME_DIR was checked is rolled back too.
    assert not User.objects.filter(username="dave").exists()
    assert not HomeDirectory.objects.exists()


# --- a real subprocess reads the password from its stdin


def test_create_user_subprocess_reads_password_from_stdin(transactional_db):
    call_command("createftpusergroup", "staff", "/srv/{username}", stdout=io.StringIO())
    result = run_subprocess(
        "createftpuseraccount", "erin", "staff", "--create-user", input="pw-erin\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Created FTP account 'erin' in group 'staff'."
    assert "pw-erin" not in result.stdout + result.stderr
    user = User.objects.get(username="erin")
    assert user.check_password("pw-erin")
    assert user.ftp_account.group.name == "staff"


def test_create_user_subprocess_empty_stdin(transactional_db):
    result = run_subprocess(
        "createftpuseraccount", "erin", "-", "/s/{username}", "--create-user", input=""
    )
    assert result.returncode == 1
    assert "CommandError: The password is empty" in result.stderr
    assert not User.objects.filter(username="erin").exists()


def test_create_user_subprocess_refuses_password_abbreviation(transactional_db):
    result = run_subprocess(
        "createftpuseraccount", "erin", "-", "--create-user", "--password", input="pw\n"
    )
    assert result.returncode == 2
    assert "unrecognized arguments: --password" in result.stderr
    assert not User.objects.filter(username="erin").exists()


def test_create_user_subprocess_refuses_password_argument(transactional_db):
    result = run_subprocess(
        "createftpuseraccount",
        "erin",
        "-",
        "--create-user",
        "--password=pw",
        input="pw\n",
    )
    # argparse refuses it: there is no --password option, and abbreviations
    # of --password-stdin are off.
    assert result.returncode == 2
    assert "unrecognized arguments: --password=pw" in result.stderr
    assert not User.objects.filter(username="erin").exists()


# --- listing


@pytest.mark.django_db
def test_list_groups(tmp_path):
    run(
        "createftpusergroup", "staff", "/srv/ftp/{username}", "--permission", "elradfmw"
    )
    run("createftpusergroup", "empty")
    User.objects.create_user("bob")
    User.objects.create_user("carol")
    run("createftpuseraccount", "bob", "staff")
    run("createftpuseraccount", "carol", "staff")
    lines = run("listftpusergroup").splitlines()
    assert lines[0].split() == ["NAME", "PERMISSION", "ACCOUNTS", "HOME"]
    assert [line.split() for line in lines[1:]] == [
        ["empty", "elr", "0", "-"],
        ["staff", "elradfmw", "2", "/srv/ftp/{username}"],
    ]


@pytest.mark.django_db
def test_list_groups_empty():
    assert run("listftpusergroup").splitlines() == [
        f"{'NAME':<24} {'PERMISSION':<11} {'ACCOUNTS':>8}  HOME"
    ]


@pytest.mark.django_db
def test_list_accounts_shows_effective_home_and_permission():
    run(
        "createftpusergroup",
        "staff",
        "/srv/ftp/{group}/{username}",
        "--permission",
        "elrw",
    )
    for name in ("bob", "carol", "dave"):
        User.objects.create_user(name)
    run("createftpuseraccount", "bob", "staff")
    run(
        "createftpuseraccount",
        "carol",
        "staff",
        "/home/{username}",
        "--permission",
        "elr",
    )
    run("createftpuseraccount", "dave", "-")  # no home anywhere
    lines = run("listftpuseraccount").splitlines()
    assert lines[0].split() == ["USERNAME", "GROUP", "ENABLED", "PERMISSION", "HOME"]
    rows = {line.split()[0]: line.split(maxsplit=4) for line in lines[1:]}
    assert rows["bob"] == ["bob", "staff", "yes", "elrw", "/srv/ftp/staff/bob"]
    assert rows["carol"] == ["carol", "staff", "yes", "elr", "/home/carol"]
    assert rows["dave"][:3] == ["dave", "-", "yes"]
    assert "no home directory is configured" in rows["dave"][4]


# --- deleting


@pytest.mark.django_db
def test_delete_account_keeps_user():
    User.objects.create_user("bob")
    run("createftpuseraccount", "bob", "-", "/d/{username}")
    out = run("deleteftpuseraccount", "bob")
    assert out.strip() == "Deleted FTP account 'bob'."
    assert not FTPUserAccount.objects.exists()
    assert User.objects.filter(username="bob").exists()


@pytest.mark.django_db
def test_delete_account_and_user():
    User.objects.create_user("bob")
    User.objects.create_user("carol")
    run("createftpuseraccount", "bob", "-", "/d/{username}")
    run("createftpuseraccount", "carol", "-", "/d/{username}")
    out = run("deleteftpuseraccount", "bob", "--delete-user")
    assert out.strip() == "Deleted FTP account 'bob' and its user."
    assert list(User.objects.values_list("username", flat=True)) == ["carol"]
    assert FTPUserAccount.objects.get().get_username() == "carol"


@pytest.mark.django_db
def test_delete_missing_account():
    User.objects.create_user("bob")  # a user, but no FTP account
    with pytest.raises(CommandError) as info:
        run("deleteftpuseraccount", "bob", "--delete-user")
    assert str(info.value) == "FTP account 'bob' does not exist."
    assert User.objects.filter(username="bob").exists()


@pytest.mark.django_db
def test_delete_empty_group():
    run("createftpusergroup", "staff")
    run("createftpusergroup", "other")
    assert run("deleteftpusergroup", "staff").strip() == "Deleted FTP group 'staff'."
    assert list(FTPUserGroup.objects.values_list("name", flat=True)) == ["other"]


@pytest.mark.django_db
def test_delete_missing_group():
    with pytest.raises(CommandError) as info:
        run("deleteftpusergroup", "ghost")
    assert str(info.value) == "FTP group 'ghost' does not exist."


@pytest.mark.django_db
def test_delete_group_with_accounts_refuses_and_keeps_everything():
    run("createftpusergroup", "staff", "/srv/{username}")
    for name in ("bob", "carol"):
        User.objects.create_user(name)
        run("createftpuseraccount", name, "staff")
    with pytest.raises(CommandError) as info:
        run("deleteftpusergroup", "staff")
    message = str(info.value)
    assert message.startswith("FTP group 'staff' still has accounts (")
    assert "'bob'" in message
    assert "'carol'" in message
    assert "move or delete them first" in message
    assert FTPUserGroup.objects.filter(name="staff").exists()
    assert FTPUserAccount.objects.filter(group__name="staff").count() == 2
    assert User.objects.count() == 2


@pytest.mark.django_db
def test_delete_group_with_many_accounts_lists_five():
    run("createftpusergroup", "crowd")
    for i in range(7):
        User.objects.create_user(f"user{i}")
        run("createftpuseraccount", f"user{i}", "crowd")
    with pytest.raises(CommandError) as info:
        run("deleteftpusergroup", "crowd")
    message = str(info.value)
    assert message.count("'user") == 5
    assert ", ...)" in message
    assert FTPUserAccount.objects.count() == 7


@pytest.mark.django_db
def test_delete_group_after_its_accounts():
    run("createftpusergroup", "staff")
    User.objects.create_user("bob")
    run("createftpuseraccount", "bob", "staff")
    run("deleteftpuseraccount", "bob")
    run("deleteftpusergroup", "staff")
    assert not FTPUserGroup.objects.exists()


# --- an account made by the commands logs in over FTP


def test_account_created_by_commands_logs_in(ftp_server, tmp_path):
    homes = tmp_path / "homes"
    run(
        "createftpusergroup",
        "staff",
        f"{homes}/{{group}}/{{username}}",
        "--permission",
        "elradfmw",
    )
    result = run_subprocess(
        "createftpuseraccount", "frank", "staff", "--create-user", input="frank-pw\n"
    )
    assert result.returncode == 0, result.stderr
    server = ftp_server()

    ftp = server.client("frank", password="frank-pw")
    assert ftp.pwd() == "/"
    ftp.storbinary("STOR hello.txt", io.BytesIO(b"hello from frank"))
    data = io.BytesIO()
    ftp.retrbinary("RETR hello.txt", data.write)
    assert data.getvalue() == b"hello from frank"
    # The group's permission has no M (chmod).
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp.sendcmd("SITE CHMOD 600 hello.txt")
    ftp.quit()
    assert (homes / "staff" / "frank" / "hello.txt").read_bytes() == b"hello from frank"

    with pytest.raises(ftplib.error_perm, match="^530"):
        server.client("frank", password="wrong-password")


def test_account_with_read_only_permission_cannot_upload(ftp_server, tmp_path):
    User.objects.create_user("gina", password=PASSWORD)
    run(
        "createftpuseraccount",
        "gina",
        "-",
        str(tmp_path / "{username}"),
        "--permission",
        "elr",
    )
    (tmp_path / "gina").mkdir()
    (tmp_path / "gina" / "readme.txt").write_text("read me")
    ftp = ftp_server().client("gina")
    assert ftp.nlst() == ["readme.txt"]
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp.storbinary("STOR new.txt", io.BytesIO(b"x"))
    ftp.quit()
    assert not (tmp_path / "gina" / "new.txt").exists()


def test_deleted_account_cannot_log_in(ftp_server, tmp_path):
    User.objects.create_user("hank", password=PASSWORD)
    run("createftpuseraccount", "hank", "-", str(tmp_path / "{username}"))
    server = ftp_server()
    server.client("hank").quit()
    run("deleteftpuseraccount", "hank")
    with pytest.raises(ftplib.error_perm, match="^530"):
        server.client("hank")
