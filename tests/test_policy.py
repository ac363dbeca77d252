"""Unit tests of the session policy: resolution, rules, refusals, validators."""

import os
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.test import override_settings
from django.utils import timezone
from pyftpdlib.authorizers import DummyAuthorizer

from ftpserver_core.models import (
    PERMISSION_LETTERS,
    DirectoryRule,
    FTPUserAccount,
    FTPUserGroup,
    HomeDirectory,
    parse_networks,
    validate_networks,
    validate_path_template,
    validate_permission,
    validate_rule_path,
)
from ftpserver_core.policy import (
    LoginRefused,
    SessionPolicy,
    load_policy,
    resolve_policy,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(tmp_path):
    """A real directory (symlinks resolved) under which homes are rendered."""
    path = tmp_path / "srv"
    path.mkdir()
    return os.path.realpath(path)


def home_dir(path, **fields):
    return HomeDirectory.objects.create(path=path, **fields)


def account(username="alice", group=None, home=None, permission="", **fields):
    user = get_user_model().objects.create_user(username=username)
    return FTPUserAccount.objects.create(
        user=user, group=group, home_directory=home, permission=permission, **fields
    )


def group(name="staff", home=None, permission="elr", **fields):
    return FTPUserGroup.objects.create(
        name=name, home_directory=home, permission=permission, **fields
    )


def policy_of(acc):
    """Resolve the policy the way a login does: from a freshly loaded account."""
    return load_policy(acc.user)


# --- permission resolution


def test_account_permission_wins_over_group(root):
    staff = group(permission="elradfmw", home=home_dir(root + "/{username}"))
    policy = policy_of(account(group=staff, permission="elrw"))
    assert policy.permission == "elrw"
    assert policy.get_perms("alice") == "elrw"


def test_blank_account_permission_inherits_group(root):
    staff = group(permission="elrad", home=home_dir(root + "/{username}"))
    assert policy_of(account(group=staff, permission="")).permission == "elrad"


@override_settings(FTPSERVER_DEFAULT_PERMISSION="elrm")
def test_blank_account_without_group_uses_default_permission(root):
    acc = account(permission="", home=home_dir(root + "/{username}"))
    assert policy_of(acc).permission == "elrm"


@override_settings(FTPSERVER_DEFAULT_PERMISSION="el")
def test_blank_account_and_blank_group_use_default_permission(root):
    staff = group(permission="", home=home_dir(root + "/{username}"))
    assert policy_of(account(group=staff, permission="")).permission == "el"


@override_settings(FTPSERVER_DEFAULT_PERMISSION="elradfmwMT")
def test_default_permission_does_not_override_explicit_values(root):
    staff = group(permission="l", home=home_dir(root + "/{username}"))
    assert policy_of(account(group=staff)).permission == "l"
    assert policy_of(account("bob", group=staff, permission="e")).permission == "e"


def test_has_perm_without_path_uses_account_permission(root):
    policy = policy_of(account(permission="elr", home=home_dir(root + "/{username}")))
    assert policy.has_perm("alice", "r")
    assert not policy.has_perm("alice", "w")
    assert policy.has_perm("alice", "r", os.path.join(policy.home, "x"))
    assert not policy.has_perm("alice", "w", os.path.join(policy.home, "x"))


# --- home directory resolution


def test_account_home_wins_over_group_home(root):
    staff = group(home=home_dir(root + "/groups/{group}"))
    acc = account(group=staff, home=home_dir(root + "/users/{username}"))
    policy = policy_of(acc)
    assert policy.home == os.path.join(root, "users", "alice")
    assert policy.home_template == root + "/users/{username}"


def test_group_home_used_when_account_has_none(root):
    staff = group("staff", home=home_dir(root + "/groups/{group}/{username}"))
    policy = policy_of(account(group=staff))
    assert policy.home == os.path.join(root, "groups", "staff", "alice")
    assert policy.group == "staff"


@override_settings(FTPSERVER_DEFAULT_HOME="/srv/default/{username}")
def test_default_home_used_when_account_and_group_have_none():
    staff = group(home=None)
    policy = policy_of(account(group=staff))
    assert policy.home == os.path.realpath("/srv/default/alice")
    assert policy.home_template == "/srv/default/{username}"
    assert policy.create_home is True


@override_settings(FTPSERVER_DEFAULT_HOME="/srv/default/{username}")
def test_default_home_without_group(root):
    assert policy_of(account(group=None)).home == os.path.realpath("/srv/default/alice")


@override_settings(FTPSERVER_DEFAULT_HOME=None)
def test_no_home_anywhere_is_refused():
    staff = group(home=None)
    acc = account(group=staff)
    with pytest.raises(LoginRefused) as info:
        policy_of(acc)
    assert info.value.reason == "home_unavailable"


@override_settings(FTPSERVER_DEFAULT_HOME=None)
def test_no_home_and_no_group_is_refused():
    with pytest.raises(LoginRefused) as info:
        policy_of(account())
    assert info.value.reason == "home_unavailable"


def test_group_placeholder_is_empty_without_group(root):
    policy = policy_of(account(home=home_dir(root + "/{group}/{username}")))
    assert policy.home == os.path.join(root, "alice")
    assert policy.group is None


def test_create_on_login_is_carried(root):
    policy = policy_of(
        account(home=home_dir(root + "/{username}", create_on_login=False))
    )
    assert policy.create_home is False
    policy = policy_of(account("bob", home=home_dir(root + "/x/{username}")))
    assert policy.create_home is True


def test_home_is_resolved_through_symlinks(root, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, os.path.join(root, "link"))
    policy = policy_of(account(home=home_dir(root + "/link/{username}")))
    assert policy.home == os.path.join(os.path.realpath(real), "alice")


@pytest.mark.parametrize("username", ["..", "."])
def test_unsafe_username_is_refused(root, username):
    acc = account(username, home=home_dir(root + "/{username}"))
    with pytest.raises(LoginRefused) as info:
        policy_of(acc)
    assert info.value.reason == "home_unavailable"
    assert repr(username) in info.value.detail


def test_username_with_slash_is_refused(root):
    acc = account("a/../../etc", home=home_dir(root + "/{username}"))
    with pytest.raises(LoginRefused) as info:
        policy_of(acc)
    assert info.value.reason == "home_unavailable"


@pytest.mark.parametrize("name", ["..", ".", "x/../../..", "/etc"])
def test_unsafe_group_name_is_refused(root, name):
    staff = group(name, home=home_dir(root + "/{group}/{username}"))
    with pytest.raises(LoginRefused) as info:
        policy_of(account(group=staff))
    assert info.value.reason == "home_unavailable"


def test_unusual_but_safe_names_are_accepted(root):
    staff = group("...team", home=home_dir(root + "/{group}/{username}"))
    policy = policy_of(account("a.b-c@d", group=staff))
    assert policy.home == os.path.join(root, "...team", "a.b-c@d")


# --- directory rules


def test_rule_path_is_rendered_under_home(root):
    acc = account(permission="elr", home=home_dir(root + "/{username}"))
    DirectoryRule.objects.create(account=acc, path="pub/{username}/", permission="elrw")
    policy = policy_of(acc)
    (rule,) = policy.rules
    assert rule.path == os.path.join(root, "alice", "pub", "alice")
    assert rule.template == "pub/{username}/"
    assert rule.source == "account"
    assert policy.permission_for(os.path.join(rule.path, "f")) == "elrw"


def test_absolute_looking_rule_path_stays_in_home(root):
    acc = account(permission="elr", home=home_dir(root + "/{username}"))
    DirectoryRule.objects.create(account=acc, path="/etc", permission="elrw")
    (rule,) = policy_of(acc).rules
    assert rule.path == os.path.join(root, "alice", "etc")


def test_most_specific_rule_wins(root):
    acc = account(permission="e", home=home_dir(root + "/{username}"))
    DirectoryRule.objects.create(account=acc, path="a", permission="el", recursive=True)
    DirectoryRule.objects.create(
        account=acc, path="a/b", permission="elr", recursive=True
    )
    DirectoryRule.objects.create(
        account=acc, path="a/b/c", permission="elrw", recursive=True
    )
    policy = policy_of(acc)
    home = policy.home
    assert policy.permission_for(home) == "e"
    assert policy.permission_for(os.path.join(home, "x")) == "e"
    assert policy.permission_for(os.path.join(home, "a")) == "el"
    assert policy.permission_for(os.path.join(home, "a", "x", "y")) == "el"
    assert policy.permission_for(os.path.join(home, "a", "b")) == "elr"
    assert policy.permission_for(os.path.join(home, "a", "b", "x")) == "elr"
    assert policy.permission_for(os.path.join(home, "a", "b", "c", "d", "e")) == "elrw"
    # A sibling whose name merely starts with the rule's name is not covered.
    assert policy.permission_for(os.path.join(home, "ab")) == "e"
    assert policy.permission_for(os.path.join(home, "a", "bc")) == "el"


def test_more_specific_group_rule_beats_less_specific_account_rule(root):
    hd = home_dir(root + "/{username}")
    staff = group(home=hd, permission="e")
    acc = account(group=staff)
    DirectoryRule.objects.create(account=acc, path="a", permission="el", recursive=True)
    DirectoryRule.objects.create(
        group=staff, path="a/b", permission="elr", recursive=True
    )
    policy = policy_of(acc)
    assert policy.permission_for(os.path.join(policy.home, "a", "b", "f")) == "elr"
    assert policy.permission_for(os.path.join(policy.home, "a", "f")) == "el"


@pytest.mark.parametrize(
    ("owners", "expected"),
    [
        (("account", "group", "home"), "e"),
        (("group", "home"), "el"),
        (("account", "home"), "e"),
        (("home",), "elr"),
        (("group",), "el"),
    ],
)
def test_same_path_account_over_group_over_home(root, owners, expected):
    hd = home_dir(root + "/{username}")
    staff = group(home=hd, permission="")
    acc = account(group=staff, permission="elradfmwMT")
    perms = {"account": "e", "group": "el", "home": "elr"}
    owner_objects = {"account": acc, "group": staff, "home": hd}
    field = {"account": "account", "group": "group", "home": "home_directory"}
    # Create in reverse precedence order so database order cannot decide.
    for owner in reversed(owners):
        DirectoryRule.objects.create(
            path="shared",
            permission=perms[owner],
            **{field[owner]: owner_objects[owner]},
        )
    policy = policy_of(acc)
    shared = os.path.join(policy.home, "shared")
    assert policy.permission_for(shared) == expected
    assert policy.permission_for(os.path.join(shared, "file")) == expected
    assert [r.source for r in policy.rules] == [
        o for o in ("account", "group", "home") if o in owners
    ]


def test_rules_of_other_owners_do_not_apply(root):
    hd = home_dir(root + "/{username}")
    other_hd = home_dir(root + "/other/{username}")
    staff = group("staff", home=hd)
    others = group("others", home=other_hd)
    acc = account(group=staff, permission="elr")
    bob = account("bob", group=others, permission="elr")
    DirectoryRule.objects.create(account=bob, path="in", permission="elrw")
    DirectoryRule.objects.create(group=others, path="in", permission="elrw")
    DirectoryRule.objects.create(home_directory=other_hd, path="in", permission="elrw")
    policy = policy_of(acc)
    assert policy.rules == ()
    assert policy.permission_for(os.path.join(policy.home, "in", "f")) == "elr"


def test_account_home_replaces_group_home_rules(root):
    group_hd = home_dir(root + "/g/{username}")
    own_hd = home_dir(root + "/own/{username}")
    staff = group(home=group_hd)
    acc = account(group=staff, home=own_hd)
    DirectoryRule.objects.create(home_directory=group_hd, path="in", permission="elrw")
    DirectoryRule.objects.create(home_directory=own_hd, path="up", permission="elrwm")
    policy = policy_of(acc)
    assert [(r.template, r.source) for r in policy.rules] == [("up", "home")]


def test_explicit_rules_argument_skips_the_database(root):
    acc = account(permission="elr", home=home_dir(root + "/{username}"))
    DirectoryRule.objects.create(account=acc, path="db", permission="elrw")
    extra = DirectoryRule(account=acc, path="given", permission="e")
    policy = resolve_policy(acc, rules=[extra])
    assert [r.template for r in policy.rules] == ["given"]


@pytest.fixture
def tree(root):
    """A home with incoming/, incoming/sub/, incoming/file and a sibling dir."""
    acc = account(permission="elr", home=home_dir(root + "/{username}"))
    home = os.path.join(root, "alice")
    os.makedirs(os.path.join(home, "incoming", "sub", "deeper"))
    os.makedirs(os.path.join(home, "incoming2"))
    open(os.path.join(home, "incoming", "file"), "w").close()
    open(os.path.join(home, "incoming", "sub", "file"), "w").close()
    return acc, home


def _paths(home):
    return {
        "home": home,
        "home/file": os.path.join(home, "file"),
        "incoming": os.path.join(home, "incoming"),
        "incoming/": os.path.join(home, "incoming") + "/",
        "incoming/file": os.path.join(home, "incoming", "file"),
        "incoming/new-file": os.path.join(home, "incoming", "new-file"),
        "incoming/sub": os.path.join(home, "incoming", "sub"),
        "incoming/sub/file": os.path.join(home, "incoming", "sub", "file"),
        "incoming/sub/deeper": os.path.join(home, "incoming", "sub", "deeper"),
        "incoming/sub/new": os.path.join(home, "incoming", "sub", "new"),
        "incoming2": os.path.join(home, "incoming2"),
        "incoming2/file": os.path.join(home, "incoming2", "file"),
    }


NON_RECURSIVE_COVERS = {
    "incoming",
    "incoming/",
    "incoming/file",
    "incoming/new-file",
}
RECURSIVE_COVERS = NON_RECURSIVE_COVERS | {
    "incoming/sub",
    "incoming/sub/file",
    "incoming/sub/deeper",
    "incoming/sub/new",
}


@pytest.mark.parametrize("recursive", [False, True])
def test_recursive_and_non_recursive_rules(tree, recursive):
    acc, home = tree
    DirectoryRule.objects.create(
        account=acc, path="incoming", permission="elrw", recursive=recursive
    )
    policy = policy_of(acc)
    covered = RECURSIVE_COVERS if recursive else NON_RECURSIVE_COVERS
    for name, path in _paths(home).items():
        expected = "elrw" if name in covered else "elr"
        assert policy.permission_for(path) == expected, name
        assert policy.has_perm("alice", "w", path) is (name in covered), name


@pytest.mark.parametrize("recursive", [False, True])
def test_rule_semantics_match_pyftpdlib_override_perm(tree, recursive):
    acc, home = tree
    DirectoryRule.objects.create(
        account=acc, path="incoming", permission="elrw", recursive=recursive
    )
    policy = policy_of(acc)
    reference = DummyAuthorizer()
    reference.add_user("alice", "x", home, perm="elr")
    reference.override_perm(
        "alice", os.path.join(home, "incoming"), "elrw", recursive=recursive
    )
    for name, path in _paths(home).items():
        if name.endswith("/"):
            continue  # pyftpdlib's has_perm does not normalise paths
        for letter in PERMISSION_LETTERS:
            assert policy.has_perm("alice", letter, path) == reference.has_perm(
                "alice", letter, path
            ), (name, letter)


def test_non_recursive_rule_falls_through_to_less_specific_rule(tree):
    acc, home = tree
    DirectoryRule.objects.create(
        account=acc, path="incoming", permission="el", recursive=True
    )
    DirectoryRule.objects.create(
        account=acc, path="incoming/sub", permission="elrw", recursive=False
    )
    policy = policy_of(acc)
    sub = os.path.join(home, "incoming", "sub")
    assert policy.permission_for(sub) == "elrw"
    assert policy.permission_for(os.path.join(sub, "file")) == "elrw"
    # deeper/ is a sub-directory: the non-recursive rule does not cover it,
    # so the recursive rule of incoming/ decides.
    assert policy.permission_for(os.path.join(sub, "deeper")) == "el"
    assert policy.permission_for(os.path.join(sub, "deeper", "f")) == "el"


def test_rules_are_decided_on_the_real_path(tree):
    acc, home = tree
    DirectoryRule.objects.create(
        account=acc, path="incoming", permission="elrwdf", recursive=True
    )
    incoming = os.path.join(home, "incoming")
    os.symlink(incoming, os.path.join(home, "alias"))
    os.symlink(os.path.join(incoming, "file"), os.path.join(home, "flink"))
    os.symlink(os.path.join(home, "incoming2"), os.path.join(incoming, "out"))
    policy = policy_of(acc)
    alias = os.path.join(home, "alias")
    # Through a link: the rule of where it leads.
    assert policy.permission_for(alias) == "elrwdf"
    assert policy.has_perm("alice", "w", os.path.join(alias, "new"))
    assert policy.has_perm("alice", "w", os.path.join(alias, "sub", "new"))
    assert policy.has_perm("alice", "w", os.path.join(home, "flink"))
    assert not policy.has_perm("alice", "w", os.path.join(home, "new"))
    assert not policy.has_perm("alice", "w", os.path.join(incoming, "out", "new"))
    # DELE, RMD, RNFR, RNTO act on the entry: decided where it lies.
    assert policy.permission_for(alias, entry=True) == "elr"
    for letter in "df":
        assert policy.has_perm("alice", letter, os.path.join(alias, "file"))
        assert policy.has_perm("alice", letter, os.path.join(incoming, "out"))
        assert not policy.has_perm("alice", letter, os.path.join(home, "flink"))
        assert not policy.has_perm("alice", letter, alias)


def test_rule_on_a_link_is_resolved(tree):
    acc, home = tree
    os.symlink(os.path.join(home, "incoming"), os.path.join(home, "alias"))
    DirectoryRule.objects.create(account=acc, path="alias", permission="elrw")
    policy = policy_of(acc)
    (rule,) = policy.rules
    assert rule.path == os.path.join(home, "incoming")
    assert rule.template == "alias"
    assert policy.has_perm("alice", "w", os.path.join(home, "incoming", "new"))


def test_paths_are_not_resolved_without_rules(tree, monkeypatch):
    # has_perm runs on every command: without rules it must not touch the disk.
    acc, home = tree
    policy = policy_of(acc)

    def realpath(path):
        raise AssertionError(f"realpath({path!r}) without rules")

    monkeypatch.setattr(os.path, "realpath", realpath)
    for letter in "rwdf":
        assert policy.has_perm("alice", letter, os.path.join(home, "f")) is (
            letter == "r"
        )


def test_empty_rule_permission_denies_everything(tree):
    acc, home = tree
    DirectoryRule.objects.create(
        account=acc, path="incoming", permission="", recursive=True
    )
    policy = policy_of(acc)
    for letter in PERMISSION_LETTERS:
        assert not policy.has_perm("alice", letter, os.path.join(home, "incoming", "f"))
    assert policy.has_perm("alice", "r", os.path.join(home, "f"))


def test_permission_for_normalises_dot_segments(tree):
    acc, home = tree
    DirectoryRule.objects.create(account=acc, path="incoming", permission="elrw")
    policy = policy_of(acc)
    assert policy.permission_for(home + "/incoming/./file") == "elrw"
    assert policy.permission_for(home + "/incoming/../file") == "elr"
    assert policy.permission_for(home + "/x/../incoming/file") == "elrw"


# --- refusal()


def make_policy(**fields):
    values = dict(
        username="alice",
        account_id=1,
        user_id=1,
        group=None,
        home="/srv/alice",
        home_template="/srv/{username}",
        create_home=True,
        permission="elr",
    )
    values.update(fields)
    return SessionPolicy(**values)


def test_refusal_none_for_plain_account():
    assert make_policy().refusal("192.0.2.1", tls=False) is None


def test_refusal_disabled():
    assert make_policy(is_enabled=False).refusal("192.0.2.1", tls=True) == (
        "account_disabled"
    )


def test_refusal_disabled_comes_before_expired():
    past = timezone.now() - timedelta(days=1)
    policy = make_policy(is_enabled=False, expires_at=past)
    assert policy.refusal("192.0.2.1", tls=True) == "account_disabled"


def test_refusal_expired():
    now = timezone.now()
    policy = make_policy(expires_at=now)
    assert policy.refusal("192.0.2.1", tls=False, now=now) == "account_expired"
    assert policy.refusal("192.0.2.1", tls=False, now=now + timedelta(seconds=1)) == (
        "account_expired"
    )
    assert (
        policy.refusal("192.0.2.1", tls=False, now=now - timedelta(seconds=1)) is None
    )


def test_refusal_expiry_uses_current_time_by_default():
    past = make_policy(expires_at=timezone.now() - timedelta(minutes=1))
    future = make_policy(expires_at=timezone.now() + timedelta(hours=1))
    assert past.refusal("192.0.2.1", tls=False) == "account_expired"
    assert future.refusal("192.0.2.1", tls=False) is None


def test_refusal_require_tls():
    policy = make_policy(require_tls=True)
    assert policy.refusal("192.0.2.1", tls=False) == "tls_required"
    assert policy.refusal("192.0.2.1", tls=True) is None


def _networks(text):
    return parse_networks(text)


@pytest.mark.parametrize(
    ("remote_ip", "allowed"),
    [
        ("192.0.2.7", True),
        ("192.0.2.255", True),
        ("192.0.3.1", False),
        ("198.51.100.10", True),
        ("198.51.100.11", False),
        ("2001:db8::1", True),
        ("2001:db8:ffff::1", True),
        ("2001:db9::1", False),
        ("::ffff:192.0.2.7", True),
        ("::ffff:192.0.3.1", False),
        ("::1", False),
        ("127.0.0.1", False),
        ("", False),
        ("not-an-ip", False),
    ],
)
def test_refusal_allowed_networks(remote_ip, allowed):
    policy = make_policy(
        allowed_networks=_networks("192.0.2.0/24, 198.51.100.10 2001:db8::/32")
    )
    expected = None if allowed else "network_not_allowed"
    assert policy.refusal(remote_ip, tls=False) == expected


def test_refusal_ipv6_only_networks_refuse_ipv4():
    policy = make_policy(allowed_networks=_networks("::/0"))
    assert policy.refusal("2001:db8::1", tls=False) is None
    assert policy.refusal("192.0.2.1", tls=False) == "network_not_allowed"
    assert policy.refusal("::ffff:192.0.2.1", tls=False) == "network_not_allowed"


def test_refusal_ipv4_mapped_matches_ipv4_network_only():
    policy = make_policy(allowed_networks=_networks("127.0.0.0/8"))
    assert policy.refusal("::ffff:127.0.0.1", tls=False) is None
    assert policy.refusal("::1", tls=False) == "network_not_allowed"


# --- limits inherited from the group


def test_limits_inherit_from_group_when_blank(root):
    staff = group(
        home=home_dir(root + "/{username}"),
        require_tls=True,
        max_sessions=3,
        allowed_networks="192.0.2.0/24",
    )
    policy = policy_of(account(group=staff))
    assert policy.require_tls is True
    assert policy.max_sessions == 3
    assert [str(n) for n in policy.allowed_networks] == ["192.0.2.0/24"]
    assert policy.refusal("192.0.2.9", tls=False) == "tls_required"
    assert policy.refusal("198.51.100.1", tls=True) == "network_not_allowed"
    assert policy.refusal("192.0.2.9", tls=True) is None


def test_account_limits_win_over_group(root):
    staff = group(
        home=home_dir(root + "/{username}"),
        require_tls=True,
        max_sessions=3,
        allowed_networks="192.0.2.0/24",
    )
    acc = account(
        group=staff,
        require_tls=False,
        max_sessions=1,
        allowed_networks="2001:db8::/32",
    )
    policy = policy_of(acc)
    assert policy.require_tls is False
    assert policy.max_sessions == 1
    assert [str(n) for n in policy.allowed_networks] == ["2001:db8::/32"]
    assert policy.refusal("2001:db8::5", tls=False) is None
    assert policy.refusal("192.0.2.9", tls=False) == "network_not_allowed"


def test_account_require_tls_true_wins_over_group_false(root):
    staff = group(home=home_dir(root + "/{username}"), require_tls=False)
    policy = policy_of(account(group=staff, require_tls=True))
    assert policy.require_tls is True


def test_limits_without_group_default_to_none(root):
    policy = policy_of(account(home=home_dir(root + "/{username}")))
    assert policy.require_tls is False
    assert policy.max_sessions is None
    assert policy.allowed_networks == ()
    assert policy.refusal("203.0.113.1", tls=False) is None


def test_enabled_and_expiry_come_from_account(root):
    when = timezone.now() - timedelta(days=2)
    acc = account(
        home=home_dir(root + "/{username}"), is_enabled=False, expires_at=when
    )
    policy = policy_of(acc)
    assert policy.is_enabled is False
    assert policy.expires_at == when
    assert policy.refusal("127.0.0.1", tls=True) == "account_disabled"


def test_load_policy_without_account_is_refused():
    user = get_user_model().objects.create_user(username="noftp")
    with pytest.raises(LoginRefused) as info:
        load_policy(user)
    assert info.value.reason == "no_ftp_account"


def test_policy_is_immutable(root):
    policy = policy_of(account(home=home_dir(root + "/{username}")))
    with pytest.raises(AttributeError):
        policy.permission = "elradfmwMT"


# --- validators


@pytest.mark.parametrize(
    "value", ["", *PERMISSION_LETTERS, "elradfmwMT", "TMwmfdarle", "mM"]
)
def test_validate_permission_accepts(value):
    validate_permission(value)


def test_all_ten_letters_fit_the_field(root):
    acc = account(home=home_dir(root + "/{username}"), permission="elradfmwMT")
    acc.full_clean()
    staff = group(permission="elradfmwMT")
    staff.full_clean()
    acc.refresh_from_db()
    assert acc.permission == "elradfmwMT"


@pytest.mark.parametrize(
    ("value", "bad"),
    [("elrx", "'x'"), ("E", "'E'"), ("el r", "' '"), ("elz*", "'*', 'z'")],
)
def test_validate_permission_refuses_unknown_letters(value, bad):
    with pytest.raises(ValidationError) as info:
        validate_permission(value)
    (message,) = info.value.messages
    assert info.value.code == "invalid_permission"
    assert bad in message
    assert repr(value) in message


@pytest.mark.parametrize("value", ["ell", "elradfmwMTe", "MM"])
def test_validate_permission_refuses_repeated_letters(value):
    with pytest.raises(ValidationError) as info:
        validate_permission(value)
    (message,) = info.value.messages
    assert info.value.code == "repeated_permission"
    assert repr(value) in message


def test_model_full_clean_refuses_bad_permission(root):
    acc = account(home=home_dir(root + "/{username}"))
    acc.permission = "elrq"
    with pytest.raises(ValidationError) as info:
        acc.full_clean()
    assert "permission" in info.value.message_dict


@pytest.mark.parametrize(
    "value", ["incoming", "/incoming/", "pub/{username}", "a/./b", "...", "{group}/in"]
)
def test_validate_rule_path_accepts(value):
    validate_rule_path(value)


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("..", "rule_escapes"),
        ("../x", "rule_escapes"),
        ("a/../b", "rule_escapes"),
        ("a/..", "rule_escapes"),
        ("/../../etc", "rule_escapes"),
        ("a\x00b", "rule_escapes"),
        ("", "rule_is_home"),
        ("/", "rule_is_home"),
        (".", "rule_is_home"),
        ("./", "rule_is_home"),
        ("//", "rule_is_home"),
    ],
)
def test_validate_rule_path_refuses(value, code):
    with pytest.raises(ValidationError) as info:
        validate_rule_path(value)
    assert info.value.code == code
    assert repr(value) in info.value.messages[0]


@pytest.mark.parametrize("value", ["pub/{user}", "{0}/in", "in/{", "in/}"])
def test_validate_rule_path_refuses_unknown_placeholders(value):
    with pytest.raises(ValidationError) as info:
        validate_rule_path(value)
    assert info.value.code == "invalid_template"
    assert repr(value) in info.value.messages[0]


def test_directory_rule_full_clean_refuses_escaping_path(root):
    acc = account(home=home_dir(root + "/{username}"))
    rule = DirectoryRule(account=acc, path="in/../..", permission="elr")
    with pytest.raises(ValidationError) as info:
        rule.full_clean()
    assert "path" in info.value.message_dict


@pytest.mark.parametrize(
    "value", ["/srv/ftp", "/srv/ftp/{username}", "/srv/{group}/{username}"]
)
def test_validate_path_template_accepts(value):
    validate_path_template(value)


@pytest.mark.parametrize("value", ["/", "/{username}"])
def test_validate_path_template_refuses_slash_and_top_level(value):
    # More in test_homes.py.
    with pytest.raises(ValidationError) as info:
        validate_path_template(value)
    assert info.value.code == "unsafe_home"


@pytest.mark.parametrize(
    "value", ["srv/ftp", "", "./ftp", "~/ftp", "{username}", "../srv/{username}"]
)
def test_validate_path_template_refuses_relative(value):
    with pytest.raises(ValidationError) as info:
        validate_path_template(value)
    assert info.value.code == "relative_home"
    assert repr(value) in info.value.messages[0]


@pytest.mark.parametrize(
    "value", ["/srv/{user}", "/srv/{0}", "/srv/{", "/srv/}", "/srv/{username}{home}"]
)
def test_validate_path_template_refuses_unknown_placeholders(value):
    with pytest.raises(ValidationError) as info:
        validate_path_template(value)
    assert info.value.code == "invalid_template"
    assert repr(value) in info.value.messages[0]


def test_validate_path_template_refuses_nul():
    with pytest.raises(ValidationError) as info:
        validate_path_template("/srv/a\x00b")
    assert info.value.code == "nul"


def test_home_directory_full_clean_refuses_relative_path():
    with pytest.raises(ValidationError) as info:
        HomeDirectory(path="srv/{username}").full_clean()
    assert "path" in info.value.message_dict


@pytest.mark.parametrize("value", ["", "192.0.2.0/24", "192.0.2.1, 2001:db8::/32"])
def test_validate_networks_accepts(value):
    validate_networks(value)


@pytest.mark.parametrize("value", ["192.0.2.0/33", "example.com", "10.0.0.0/8 nope"])
def test_validate_networks_refuses(value):
    with pytest.raises(ValidationError) as info:
        validate_networks(value)
    assert info.value.code == "invalid_network"
