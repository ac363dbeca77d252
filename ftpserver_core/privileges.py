"""Dropping root privileges once the port is bound (``--user``, ``--group``).

Classic FTP daemons bind port 21 as root and then become an unprivileged user
for good: a hole in the server then yields that user's rights, not root's.
The ``ftpserver`` command does the same after binding and before anything
serves a client, opens the audit journal or forks prefork workers:
supplementary groups from the group database (``initgroups``), then the
group, then the user (real, effective and saved ids: there is no way back),
then a check that ``setuid(0)`` fails.

What the user must reach afterwards is prepared or checked here: the audit
journal directory is created and given to the user before the drop; a
SQLite database that user cannot write, or (with prefork) a TLS key it
cannot read, is reported in a sentence instead of failing at the first
login.
"""

import os
import re
import stat
from dataclasses import dataclass


class PrivilegeError(Exception):
    """Privileges cannot be dropped as configured; ``message`` says why."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


def _databases():
    try:
        import grp
        import pwd
    except ImportError:  # pragma: no cover - not a POSIX system
        raise LookupError(
            "dropping privileges needs a POSIX system (users, groups and "
            "setuid()); this one has none."
        ) from None
    return pwd, grp


def user_entry(value):
    """Return the password database entry of ``value`` (a name or a uid).

    Raise LookupError with a sentence quoting ``value`` when there is none,
    or when it is root (dropping to root drops nothing).
    """
    pwd, _ = _databases()
    name = str(value).strip()
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        entry = None
        if name.isdigit():
            try:
                entry = pwd.getpwuid(int(name))
            except KeyError:
                pass
    if entry is None:
        raise LookupError(
            f"{value!r} is not a user on this system; expected the name (or uid) "
            "of the unprivileged user to run as once the port is bound."
        )
    if entry.pw_uid == 0:
        raise LookupError(
            f"{value!r} is root (uid 0); expected an unprivileged user to run as "
            "once the port is bound."
        )
    return entry


def group_entry(value):
    """Return the group database entry of ``value`` (a name or a gid)."""
    _, grp = _databases()
    name = str(value).strip()
    try:
        entry = grp.getgrnam(name)
    except KeyError:
        entry = None
        if name.isdigit():
            try:
                entry = grp.getgrgid(int(name))
            except KeyError:
                pass
    if entry is None:
        raise LookupError(
            f"{value!r} is not a group on this system; expected the name (or gid) "
            "of the group to run as once the port is bound."
        )
    if entry.gr_gid == 0:
        raise LookupError(
            f"{value!r} is the root group (gid 0); expected an unprivileged group."
        )
    return entry


@dataclass(frozen=True)
class Identity:
    """A user and group to run as."""

    user: str
    uid: int
    group: str
    gid: int

    def __str__(self):
        return f"{self.user} (uid {self.uid}), group {self.group} (gid {self.gid})"

    @property
    def groups(self):
        """The group ids a login of this user gets (initgroups)."""
        return set(os.getgrouplist(self.user, self.gid)) | {self.gid}


def identity(user, group=None):
    """Return the Identity of ``user`` with ``group`` (default: its own group)."""
    _, grp = _databases()
    entry = user_entry(user)
    if group is None:
        gid = entry.pw_gid
        if gid == 0:
            raise LookupError(
                f"The primary group of {user!r} is the root group (gid 0); "
                "expected a group (--group, FTPSERVER_GROUP) that is not."
            )
        try:
            group_name = grp.getgrgid(gid).gr_name
        except KeyError:
            group_name = str(gid)
    else:
        found = group_entry(group)
        gid, group_name = found.gr_gid, found.gr_name
    return Identity(entry.pw_name, entry.pw_uid, group_name, gid)


def current():
    """Return the Identity this process runs as (its effective ids).

    None where there are no such ids (Windows).
    """
    try:
        pwd, grp = _databases()
    except LookupError:
        return None
    uid, gid = os.geteuid(), os.getegid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return Identity(user, uid, group, gid)


def is_root():
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _ids():
    """((real, effective, saved) uids, the same gids) of this process."""
    if hasattr(os, "getresuid"):
        return os.getresuid(), os.getresgid()
    # macOS has no saved ids to read; setuid() as root sets all three.
    return (os.getuid(), os.geteuid(), os.geteuid()), (
        os.getgid(),
        os.getegid(),
        os.getegid(),
    )


def already(target):
    """True when this process runs as ``target`` already: nothing to drop."""
    return _ids() == ((target.uid,) * 3, (target.gid,) * 3)


# The journal's own files: segments, segments being born, refused lines.
_JOURNAL_FILE_RE = re.compile(r"^(\.?journal-.*|bad-\d+\.jsonl\.bad)$")


def prepare_journal(directory, target):
    """Create the audit journal directory and give it, and its files, to ``target``.

    Run as root, before the drop: the directory may not exist yet, and a
    journal left by a run as root (a crash) must be readable and removable
    by the server that recovers it. Only the directory itself and the
    journal's own files change owner, never what a symlink points to.
    """
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if not stat.S_ISDIR(os.stat(directory).st_mode):
            raise PrivilegeError(
                f"The audit journal directory {directory!r} is not a directory."
            )
        os.chown(directory, target.uid, target.gid)
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False) and _JOURNAL_FILE_RE.match(
                    entry.name
                ):
                    os.chown(entry.path, target.uid, target.gid, follow_symlinks=False)
    except OSError as exc:
        raise PrivilegeError(
            f"Cannot give the audit journal directory {directory!r} to the user "
            f"{target.user!r}: {exc.strerror}."
        ) from None


def drop(target):
    """Become ``target`` for good (root only); raise PrivilegeError if it fails."""
    if not is_root():
        raise PrivilegeError(
            f"Privileges can only be dropped by root; this process runs as {current()}."
        )
    try:
        # Root's supplementary groups go first, while setgroups() is allowed.
        os.setgroups([])
        os.initgroups(target.user, target.gid)
        # The saved ids too: with the saved uid left at 0, seteuid(0) would
        # undo the drop. (As root, setgid() and setuid() set all three.)
        if hasattr(os, "setresuid"):
            os.setresgid(target.gid, target.gid, target.gid)
            os.setresuid(target.uid, target.uid, target.uid)
        else:
            os.setgid(target.gid)
            os.setuid(target.uid)
    except OSError as exc:
        raise PrivilegeError(
            f"Cannot drop privileges to {target}: {exc.strerror}."
        ) from None
    verify(target)


def verify(target, groups=True):
    """Raise PrivilegeError unless this process runs as ``target`` with no way back.

    ``groups``: also check that no supplementary group is left but the user's
    own (true after drop(); a process started as the user has what its
    starter gave it).
    """
    if not already(target):
        raise PrivilegeError(
            f"The server should run as {target} with no way back, but its (real, "
            f"effective, saved) uids are {_ids()[0]} and gids {_ids()[1]}."
        )
    extra = set(os.getgroups()) - target.groups if groups else ()
    if extra:
        raise PrivilegeError(
            f"The server runs as {target} but kept the supplementary groups "
            f"{sorted(extra)}."
        )
    for name, regain in (
        ("setuid(0)", lambda: os.setuid(0)),
        ("seteuid(0)", lambda: os.seteuid(0)),
        ("setgid(0)", lambda: os.setgid(0)),
    ):
        try:
            regain()
        except PermissionError:
            continue
        raise PrivilegeError(
            f"Privileges were dropped to {target} but {name} still succeeds: "
            "the drop can be undone; refusing to serve."
        )
    for task, ids in _thread_ids():
        if ids != (target.uid, target.gid):
            raise PrivilegeError(
                f"Thread {task} still runs as uid {ids[0]}, gid {ids[1]} after the "
                f"drop to {target}."
            )


def _thread_ids():
    """Yield (thread id, (uid, gid)) of every thread of this process.

    The C library changes the ids of every thread (the login workers already
    run at the drop); /proc shows whether it did. (-1, -1): ids that differ
    between real, effective, saved and filesystem.
    """
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/status") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
        except OSError:
            continue  # the thread ended meanwhile
        uids = set(fields.get("Uid", "").split())
        gids = set(fields.get("Gid", "").split())
        if len(uids) == 1 and len(gids) == 1:
            yield task, (int(uids.pop()), int(gids.pop()))
        else:
            yield task, (-1, -1)


def ensure(target):
    """Drop to ``target`` when still root; else check this process runs as it."""
    if is_root():
        drop(target)
    else:
        verify(target, groups=False)


def access_problems(target, journal_directory, databases=(), tls_files=()):
    """Return sentences naming what ``target`` cannot use, after the drop.

    Checked as the user itself (``os.access`` after the drop), so ACLs and
    every directory above count. ``databases``: the settings dicts of the
    configured databases; ``tls_files``: files read after the drop (the
    certificate and key of prefork workers).
    """
    problems = []
    ok = os.R_OK | os.W_OK | os.X_OK
    if not os.access(journal_directory, ok):
        problems.append(
            f"The audit journal directory {journal_directory!r} is not usable by "
            f"the user {target.user!r} (uid {target.uid}), which the server runs "
            "as after the drop: that user must be able to reach it through every "
            "directory above it (a home such as /root lets nobody through); set "
            "FTPSERVER_AUDIT_JOURNAL_DIR to a directory that user can reach."
        )
    for settings_dict in databases:
        path = _sqlite_path(settings_dict)
        if path is None:
            continue
        directory = os.path.dirname(path) or "."
        unwritable = [
            name
            for name in (path, path + "-journal", path + "-wal", path + "-shm")
            if os.path.exists(name) and not os.access(name, os.R_OK | os.W_OK)
        ]
        if unwritable or not os.access(directory, os.W_OK | os.X_OK):
            problems.append(
                f"The SQLite database {path!r} is not writable by the user "
                f"{target.user!r} (uid {target.uid}), which the server runs as "
                "after the drop: give that user the database file and its "
                f"directory, where SQLite writes its journal (chown {target.user} "
                f"{unwritable[0] if unwritable else path} {directory}), or run "
                "the server without --user."
            )
    for path in tls_files:
        if path and not os.access(path, os.R_OK):
            problems.append(
                f"The TLS file {path!r} is not readable by the user "
                f"{target.user!r} (uid {target.uid}): with prefork each worker "
                "loads it after the drop. Make it readable by a group of that "
                "user (e.g. chgrp ssl-cert, chmod 640), or run one worker "
                "(which loads it before the drop)."
            )
    return problems


def unreadable_code():
    """Return the directories of Python code this process can no longer read.

    Called after the drop. Modules already imported keep working, but one
    imported later (a rare code path, a lazy import) would fail: Python
    installed under /root (pyenv) is the usual cause.
    """
    import django

    directories = {
        os.path.dirname(os.__file__),  # the standard library
        os.path.dirname(os.path.dirname(django.__file__)),  # site-packages
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),  # this project
    }
    return sorted(d for d in directories if not os.access(d, os.R_OK | os.X_OK))


def _sqlite_path(settings_dict):
    if not settings_dict.get("ENGINE", "").endswith("sqlite3"):
        return None
    name = os.fspath(settings_dict.get("NAME") or "")
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return os.path.abspath(name)
