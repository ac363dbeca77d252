"""purgeftpaudit: delete the audit records older than a date, exactly those."""

import datetime
import io
import os
import pty
import re
import select
import subprocess
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.utils import timezone

from ftpserver_core.models import AuditEvent

from .audit_tools import PYTHON
from .processes import REPO_ROOT, command_env

UTC = datetime.UTC
NEW_YEAR = datetime.datetime(2024, 1, 1, tzinfo=UTC)
TINY = datetime.timedelta(microseconds=1)
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Django colours errors on a terminal


@pytest.fixture
def records(transactional_db):
    """Records around 2024-01-01 00:00 UTC and around 30 days ago."""
    now = timezone.now()
    times = {
        "just_before_new_year": NEW_YEAR - TINY,
        "at_new_year": NEW_YEAR,
        "just_after_new_year": NEW_YEAR + TINY,
        "june": datetime.datetime(2024, 6, 1, 12, tzinfo=UTC),
        "31_days_ago": now - datetime.timedelta(days=31),
        "29_days_ago": now - datetime.timedelta(days=29),
        "now": now,
    }
    AuditEvent.objects.bulk_create(
        AuditEvent(time=t, event="connect", username=name) for name, t in times.items()
    )
    return times


def remaining():
    return set(AuditEvent.objects.values_list("username", flat=True))


def purge(*args):
    out = io.StringIO()
    call_command("purgeftpaudit", *args, stdout=out)
    return out.getvalue()


def test_before_a_date_deletes_exactly_the_older_records(records):
    out = purge("--before", "2024-01-01", "--yes")
    assert out == "Deleted 1 audit records before 2024-01-01T00:00:00+00:00.\n"
    assert remaining() == set(records) - {"just_before_new_year"}


def test_before_a_number_of_days(records):
    out = purge("--before", "30d", "--yes")
    assert out.startswith("Deleted 5 audit records before ")
    assert remaining() == {"29_days_ago", "now"}


@pytest.mark.parametrize(
    ("value", "deleted"),
    [
        ("2024-01-01T02:00:00+02:00", {"just_before_new_year"}),
        ("2024-01-01T00:00:00Z", {"just_before_new_year"}),
        ("2024-01-01T00:00:00.000001+00:00", {"just_before_new_year", "at_new_year"}),
        (
            "2024-06-01 12:00:00.000001+00:00",
            {"just_before_new_year", "at_new_year", "just_after_new_year", "june"},
        ),
    ],
)
def test_before_an_iso_date_time(records, value, deleted):
    purge("--before", value, "--yes")
    assert remaining() == set(records) - deleted


@override_settings(TIME_ZONE="Europe/Paris")
def test_a_naive_date_time_is_in_the_current_time_zone(records):
    out = purge("--before", "2024-01-01T01:00:00", "--yes")  # 00:00 UTC
    assert out == "Deleted 1 audit records before 2024-01-01T01:00:00+01:00.\n"
    assert "just_before_new_year" not in remaining()
    assert "at_new_year" in remaining()


def test_deletes_in_batches(records):
    out = purge("--before", "30d", "--yes", "--batch-size", "2")
    assert out.startswith("Deleted 5 audit records")
    assert remaining() == {"29_days_ago", "now"}


def test_nothing_to_delete(records):
    out = purge("--before", "2000-01-01")  # no --yes needed: nothing to confirm
    assert out == "No audit records before 2000-01-01T00:00:00+00:00.\n"
    assert remaining() == set(records)


@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "2024-13-45",
        "2024-02-30",
        "2024-01-01T25:00:00",
        "01/02/2024",
        "99999999999d",
        "-5d",
        "",
    ],
)
def test_a_bad_date_is_a_command_error_quoting_it(records, value):
    with pytest.raises(CommandError) as error:
        purge(f"--before={value}", "--yes")
    assert f"--before {value!r} is not a date" in str(error.value)
    assert remaining() == set(records)


def test_a_batch_size_below_one_is_refused(records):
    with pytest.raises(CommandError, match="--batch-size must be at least 1, not 0"):
        purge("--before", "30d", "--yes", "--batch-size", "0")
    assert remaining() == set(records)


# --- confirmation, from a real process


def command(*args):
    return [PYTHON, "-m", "django", "purgeftpaudit", *args]


def test_without_yes_and_without_a_terminal_it_refuses(records):
    result = subprocess.run(
        command("--before", "2024-01-01"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=command_env(),
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "CommandError: 1 audit records before 2024-01-01T00:00:00+00:00 would be "
        "deleted; add --yes to confirm without a prompt."
    )
    assert result.stdout == ""
    assert remaining() == set(records)


def run_in_a_terminal(args, answer, timeout=60):
    """Run the command on a pseudo-terminal; type ``answer`` at the prompt.

    Returns (exit code, everything the terminal showed).
    """
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        command(*args),
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=command_env(),
        cwd=REPO_ROOT,
        start_new_session=True,
    )
    os.close(terminal)
    shown = b""
    answered = False
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no end; the terminal shows {shown!r}"
            ready, _, _ = select.select([controller], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            shown += chunk
            if not answered and shown.endswith(b"[y/N] "):
                os.write(controller, answer)
                answered = True
        assert answered, f"no prompt; the terminal shows {shown!r}"
        shown = ANSI.sub("", shown.decode().replace("\r\n", "\n"))
        return proc.wait(timeout), shown
    finally:
        os.close(controller)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_prompt_on_a_terminal_deletes_on_yes(records):
    code, shown = run_in_a_terminal(["--before", "2024-06-01"], b"y\n")
    assert code == 0
    prompt = "Delete 3 audit records before 2024-06-01T00:00:00+00:00? [y/N] "
    assert shown == (
        f"{prompt}y\nDeleted 3 audit records before 2024-06-01T00:00:00+00:00.\n"
    )
    assert remaining() == set(records) - {
        "just_before_new_year",
        "at_new_year",
        "just_after_new_year",
    }


@pytest.mark.parametrize("answer", [b"\n", b"n\n", b"yes please\n", b"\x04"])
def test_the_prompt_on_a_terminal_keeps_everything_otherwise(records, answer):
    code, shown = run_in_a_terminal(["--before", "2024-06-01"], answer)
    assert code == 1
    assert shown.startswith("Delete 3 audit records before 2024-06-01T00:00:00+00:00?")
    assert shown.endswith("\nCommandError: Nothing deleted.\n")
    assert "Traceback" not in shown
    assert remaining() == set(records)
