"""The immutable per-session policy: what one logged-in account may do.

A policy is built once at login from the database (account, group, home
directory, directory rules) and then answers every permission question from
memory. It also serves as the session's pyftpdlib authorizer, so pyftpdlib's
own permission checks (``has_perm``, ``get_perms``) go through it.
"""

import dataclasses
import errno
import hashlib
import ipaddress
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Q
from django.utils import timezone

from .conf import settings
from .models import DirectoryRule, FTPUserAccount, parse_networks
from .models.accounts import (
    home_location_problem,
    home_root_problem,
    home_roots,
    template_placeholders,
)

logger = logging.getLogger(__name__)


class LoginRefused(Exception):
    """A login that must be refused; ``reason`` is in LOGIN_FAILURE_REASONS."""

    def __init__(self, reason, detail=""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# Rules with the same path: the account's win over the group's over the home's.
SOURCE_PRECEDENCE = {"account": 0, "group": 1, "home": 2}

# What the admin is told of a directory rule's folder: there; never created
# (outside the home, or a link or a file in the way); missing and created at
# the next login (the home's "create on first login"); missing for good.
FOLDER_STATES = ("exists", "blocked", "created_at_login", "missing")

# The letters of the commands that change a directory entry itself (DELE and
# RMD remove a link, RNFR and RNTO move it), never what a link there leads to:
# they are decided where the entry lies. "in/out -> ../free" is in in/.
ENTRY_LETTERS = frozenset("df")


@dataclass(frozen=True, slots=True)
class Rule:
    """One directory rule, resolved to a real absolute path."""

    path: str
    permission: str
    recursive: bool
    source: str
    template: str = ""

    def __post_init__(self):
        # Paths are matched against real paths: a rule on "pub", a link to
        # "data/pub", must cover "data/pub" (the only path it will see), and
        # be sorted as specific as that.
        object.__setattr__(self, "path", os.path.realpath(self.path))

    def covers(self, path):
        """Return True when this rule decides the permissions of the real ``path``."""
        if path == self.path:
            return True
        if not path.startswith(self.path + os.sep):
            return False
        if self.recursive:
            return True
        # pyftpdlib's override_perm: a non-recursive rule covers the files
        # directly inside the directory, not its sub-directories.
        return os.path.dirname(path) == self.path and not os.path.isdir(path)


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """Everything the server needs to know about a logged-in account."""

    username: str
    account_id: int
    user_id: object
    group: str | None
    home: str
    home_template: str
    create_home: bool
    permission: str
    rules: tuple = ()
    is_enabled: bool = True
    expires_at: datetime | None = None
    require_tls: bool = False
    max_sessions: int | None = None
    allowed_networks: tuple = field(default=())
    quota_bytes: int | None = None
    quota_files: int | None = None
    max_upload_size: int | None = None
    upload_rate: int | None = None
    download_rate: int | None = None
    msg_login: str = "Login successful."
    msg_quit: str = "Goodbye."
    # The session this policy was issued to (set once it is registered).
    session_id: str = ""
    # A digest of the user's stored password hash at login: a change of it
    # ends the session (FTPSERVER_END_SESSIONS_ON_ACCOUNT_CHANGE).
    password_stamp: str = ""

    # --- questions answered from memory

    def permission_for(self, path, entry=False):
        """Return the permission letters that apply at ``path``.

        Rules are decided on the real path: a link inside the home
        (``alias -> in``) must not lead around the rule of ``in``. With
        ``entry``, the command acts on the directory entry ``path`` itself,
        not on where a link there leads: only its directory is resolved.
        """
        if not self.rules:
            # Every path has the account's letters: no need to ask the disk
            # (this runs on every command; resolving a path costs a system
            # call per component).
            return self.permission
        if entry:
            head, tail = os.path.split(os.path.normpath(path))
            path = os.path.join(os.path.realpath(head), tail)
        else:
            path = os.path.realpath(path)
        for rule in self.rules:
            if rule.covers(path):
                return rule.permission
        return self.permission

    def refusal(self, remote_ip, tls, now=None):
        """Return why this account may not log in now, or None."""
        if not self.is_enabled:
            return "account_disabled"
        if self.expires_at is not None and (now or timezone.now()) >= self.expires_at:
            return "account_expired"
        if self.require_tls and not tls:
            return "tls_required"
        if self.allowed_networks and not _in_networks(remote_ip, self.allowed_networks):
            return "network_not_allowed"
        return None

    def ensure_home(self):
        """Create the home directory if allowed; refuse the login otherwise.

        With the home's "create on first login", the missing folders of the
        directory rules are made too, at every login: a rule added since the
        first one gets its folder at the next.
        """
        if not os.path.isdir(self.home):
            if not self.create_home:
                raise LoginRefused("home_unavailable", f"{self.home!r} does not exist")
            try:
                os.makedirs(self.home, mode=settings.HOME_DIR_MODE, exist_ok=True)
            except OSError as exc:
                raise LoginRefused(
                    "home_unavailable", f"cannot create {self.home!r}: {exc}"
                ) from exc
        # resolve_policy checked where the real path lies; a link put in its
        # place since would take the session somewhere unchecked.
        real = os.path.realpath(self.home)
        if real != self.home:
            raise LoginRefused(
                "home_unavailable",
                f"{self.home!r} became a link to {real!r} after it was checked",
            )
        if self.create_home:
            self.ensure_rule_folders()

    def rule_folders(self):
        """Return (rule, folder) pairs: each rule's path as written, in the home."""
        folders = []
        for rule in self.rules:
            written = _render(rule.template, self.username, self.group).strip("/")
            folders.append((rule, os.path.normpath(os.path.join(self.home, written))))
        return folders

    def rule_folder_states(self):
        """Return (rule, folder, state) for the admin, state one of FOLDER_STATES."""
        states = []
        for rule, folder in self.rule_folders():
            if os.path.isdir(folder):
                state = "exists"
            elif folder_problem(self.home, folder) or _obstacle(self.home, folder):
                state = "blocked"
            elif self.create_home:
                state = "created_at_login"
            else:
                state = "missing"
            states.append((rule, folder, state))
        return states

    def ensure_rule_folders(self):
        """Create the missing folders of the directory rules, as the home was.

        A folder that cannot be made (a link or a file in its way) is logged
        and skipped: the login goes on, the folder stays missing.
        """
        for rule, folder in self.rule_folders():
            if os.path.isdir(folder):
                continue
            try:
                make_folder(self.home, folder)
            except OSError as exc:
                logger.warning(
                    "Folder %r of the directory rule %r of %r not created: %s",
                    folder,
                    rule.template,
                    self.username,
                    exc,
                )

    # --- pyftpdlib authorizer interface, for the logged-in session

    def has_user(self, username):
        return username == self.username

    def has_perm(self, username, perm, path=None):
        if path is None:
            return perm in self.permission
        return perm in self.permission_for(path, entry=perm in ENTRY_LETTERS)

    def get_perms(self, username):
        return self.permission

    def get_home_dir(self, username):
        return self.home

    def get_msg_login(self, username):
        return self.msg_login

    def get_msg_quit(self, username):
        return self.msg_quit

    def impersonate_user(self, username, password):
        """Do nothing: every session runs as the server's own OS user."""

    def terminate_impersonation(self, username):
        """Do nothing: every session runs as the server's own OS user."""


def folder_problem(home, folder):
    """Return why ``folder`` cannot be made inside ``home`` as written, or None.

    Only a lexical sub-path of the home qualifies: nothing reached by ``..``
    or by a link is ever created (the disk is checked by ``make_folder``).
    """
    if not folder.startswith(home + os.sep):
        return f"{folder!r} is not inside the home {home!r}"
    return None


def _obstacle(home, folder):
    """Return the first link or non-directory on the way to ``folder``, or None."""
    path = home
    for part in os.path.relpath(folder, home).split(os.sep):
        path = os.path.join(path, part)
        if os.path.islink(path):
            return path
        if not os.path.isdir(path):
            return path if os.path.exists(path) else None
    return None


def make_folder(home, folder):
    """Create ``folder`` and its missing parents inside ``home``; follow no link.

    Each step opens the directory just made or found with O_NOFOLLOW, from
    the one before it: a link anywhere on the way (put there before or
    while this runs) stops it with an OSError, having created nothing
    beyond it.
    """
    problem = folder_problem(home, folder)
    if problem is not None:
        raise OSError(errno.EPERM, problem)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    fd = os.open(home, flags)
    try:
        for part in os.path.relpath(folder, home).split(os.sep):
            try:
                os.mkdir(part, settings.HOME_DIR_MODE, dir_fd=fd)
            except FileExistsError:
                pass
            parent, fd = fd, None
            try:
                fd = os.open(part, flags, dir_fd=parent)
            finally:
                os.close(parent)
    finally:
        if fd is not None:
            os.close(fd)


def _in_networks(remote_ip, networks):
    try:
        address = ipaddress.ip_address(remote_ip)
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(
        address in network for network in networks if network.version == address.version
    )


def _render(template, username, group):
    """Fill {username} and {group} into a path template, refusing unsafe values."""
    for value in (username, group or ""):
        if "/" in value or "\x00" in value or value in (".", ".."):
            raise LoginRefused("home_unavailable", f"unsafe name {value!r} in a path")
    try:
        template_placeholders(template)
    except ValueError as exc:
        # A row saved before the validators refused format tricks, which would
        # follow attributes or pad an empty group into "..".
        raise LoginRefused(
            "home_unavailable", f"path template {template!r} {exc}"
        ) from None
    return template.format(username=username, group=group or "")


def _check_home(home):
    """Refuse the real ``home`` in a system directory or outside the home roots."""
    roots = home_roots()
    if roots is not None:
        # The home is a real path, so a root reached through a link counts by
        # its real path too, as long as that is still a valid root.
        real = (os.path.realpath(root) for root in roots)
        real = (r for r in real if home_root_problem(r) is None)
        roots = tuple(dict.fromkeys((*roots, *real)))
    problem = home_location_problem(home, roots)
    if problem is not None:
        _code, reason, expected = problem
        raise LoginRefused(
            "home_unavailable", f"{home!r} {reason}; expected {expected}"
        )


def resolve_policy(account, rules=None):
    """Build the session policy of ``account`` (no login checks, no disk writes).

    Resolution: the account's own value wins over its group's, which wins over
    the FTPSERVER_* defaults; a blank value means "inherit".
    """
    group = account.group
    username = account.get_username()
    group_name = group.name if group else None

    home_dir = account.home_directory or (group.home_directory if group else None)
    if home_dir is not None:
        home_template, create_home = home_dir.path, home_dir.create_on_login
    elif settings.DEFAULT_HOME:
        home_template, create_home = settings.DEFAULT_HOME, True
    else:
        raise LoginRefused("home_unavailable", "no home directory is configured")
    home = os.path.realpath(_render(home_template, username, group_name))
    _check_home(home)

    if rules is None:
        owners = Q(account=account)
        if group is not None:
            owners |= Q(group=group)
        if home_dir is not None:
            owners |= Q(home_directory=home_dir)
        rules = DirectoryRule.objects.filter(owners)
    resolved = []
    for rule in rules:
        source = "account" if rule.account_id else "group" if rule.group_id else "home"
        sub = _render(rule.path, username, group_name).strip("/")
        resolved.append(
            Rule(
                path=os.path.normpath(os.path.join(home, sub)),
                permission=rule.permission,
                recursive=rule.recursive,
                source=source,
                template=rule.path,
            )
        )
    # Most specific path first, then by owner precedence.
    resolved.sort(key=lambda r: (-len(r.path), SOURCE_PRECEDENCE[r.source]))

    def inherit(name, default=None):
        value = getattr(account, name)
        if value in (None, "") and group is not None:
            value = getattr(group, name)
        return default if value in (None, "") else value

    return SessionPolicy(
        username=username,
        account_id=account.pk,
        user_id=account.user_id,
        group=group_name,
        home=home,
        home_template=home_template,
        create_home=create_home,
        permission=inherit("permission", settings.DEFAULT_PERMISSION),
        rules=tuple(resolved),
        is_enabled=account.is_enabled,
        expires_at=account.expires_at,
        require_tls=bool(inherit("require_tls", False)),
        max_sessions=inherit("max_sessions"),
        quota_bytes=inherit("quota_bytes"),
        quota_files=inherit("quota_files"),
        max_upload_size=inherit("max_upload_size"),
        upload_rate=inherit("upload_rate"),
        download_rate=inherit("download_rate"),
        allowed_networks=parse_networks(inherit("allowed_networks", "")),
    )


def password_stamp(stored):
    """Return a short digest of a stored password hash (never the hash itself)."""
    return hashlib.sha256((stored or "").encode()).hexdigest()[:16]


def load_policy(user):
    """Load the policy of ``user``'s FTP account from the database (2 queries)."""
    try:
        account = FTPUserAccount.objects.select_related(
            "user", "group__home_directory", "home_directory"
        ).get(user=user)
    except FTPUserAccount.DoesNotExist:
        raise LoginRefused("no_ftp_account") from None
    policy = resolve_policy(account)
    return dataclasses.replace(policy, password_stamp=password_stamp(user.password))
