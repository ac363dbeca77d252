"""The defender: scores misbehaving addresses, bans them, refuses them at accept.

Modelled on SFTPGo's defender, ProFTPD's mod_ban and fail2ban:

- every address (IPv6: its /64) collects points for failed logins (an unknown
  user more than a wrong password), connections that never log in, protocol
  abuse and connection limits hit; past ``FTPSERVER_DEFENDER_THRESHOLD``
  points within ``FTPSERVER_DEFENDER_WINDOW`` seconds it is banned, for a
  time that grows with each repeat offence;
- a user name failing from many addresses (password spraying) gets growing
  delays before its logins are checked, never a lock (a lock would let an
  attacker lock the real user out);
- the safelist (never scored, never banned) and the blocklist (always
  refused) come from the admin and from FTPSERVER_DEFENDER_SAFELIST;
- bans are database rows (``models.Ban``): every process and node sharing
  the database enforces a ban within about a second (``store.py``), and a
  ban closes the address's open sessions.

Everything the loop asks is answered from memory. Scores live in each
process; bans, the lists and the repeat-offence counts are shared.
"""

import collections
import datetime
import logging
import time

from .. import audit, signals
from ..conf import settings
from .addresses import NetworkMap, address_key, parse
from .scores import ScoreBoard
from .store import BanStore, outlasts

logger = logging.getLogger("ftpserver_core.defender")

__all__ = ["SCORE_KINDS", "Defender", "address_key"]

# What an address is scored for, and the ban reason each one leads to.
SCORE_KINDS = {
    "unknown_user": "failed_logins",
    "wrong_password": "failed_logins",
    "no_login": "no_login",
    "abuse": "abuse",
    "limit_exceeded": "limits",
}

DEFAULT_SCORES = {
    "unknown_user": 2,
    "wrong_password": 1,
    "no_login": 1,
    "abuse": 3,
    "limit_exceeded": 3,
}

REFUSAL_MESSAGES = {
    "banned": "421 Your address is banned for a while; try again later.",
    "blocklisted": "421 Connections from your address are not accepted.",
}


class Defender:
    """One server's defender; every method but the store's runs on the IO loop."""

    def __init__(self, server):
        self.server = server
        self.enabled = bool(settings.DEFENDER_ENABLED)
        self.threshold = settings.DEFENDER_THRESHOLD
        self.window = settings.DEFENDER_WINDOW
        self.scores_for = {**DEFAULT_SCORES, **(settings.DEFENDER_SCORES or {})}
        self.ban_time = settings.DEFENDER_BAN_TIME
        self.ban_growth = settings.DEFENDER_BAN_GROWTH
        self.max_ban_time = settings.DEFENDER_MAX_BAN_TIME
        self.username_threshold = settings.DEFENDER_USERNAME_THRESHOLD
        self.username_max_delay = settings.DEFENDER_USERNAME_MAX_DELAY
        self.refused_interval = settings.DEFENDER_REFUSED_LOG_INTERVAL
        self.scores = ScoreBoard(self.window)
        self.usernames = ScoreBoard(self.window)
        self.bans = NetworkMap()
        self.blocklist = NetworkMap()
        self._configured_safelist = [
            (network, "safelist") for network in settings.DEFENDER_SAFELIST or ()
        ]
        self.safelist = NetworkMap(self._configured_safelist)
        self.offences = {}
        self._refused = collections.OrderedDict()
        self.store = BanStore(
            lambda changes: server.worker_pool.call_soon(self.apply, changes),
            settings.DEFENDER_POLL_INTERVAL,
        )

    def start(self):
        """Load the bans and lists, then keep them current (the state thread)."""
        self.store.start(self.server.state)

    # --- questions asked at accept time

    def refusal(self, ip, now=None):
        """Return why ``ip`` is refused ("blocklisted", "banned") or None."""
        address = parse(ip)
        if address is None:
            return None
        if self.blocklist.lookup(address) is not None:
            return "blocklisted"
        found = self.bans.lookup(address)
        if found is None:
            return None
        network, ban = found
        expires = ban["expires"]
        if expires is not None and expires <= (now or time.time()):
            self.bans.discard(network)
            return self.refusal(ip, now)  # a wider ban may still hold
        return "banned"

    def is_safe(self, ip):
        return self.safelist.lookup(ip) is not None

    def should_record_refusal(self, ip, reason, now=None):
        """True for the first refusal of an address per reason and interval.

        A banned address reconnecting in a loop would otherwise write a row
        per attempt.
        """
        now = now or time.monotonic()
        key = (address_key(ip), reason)
        last = self._refused.get(key)
        if last is not None and now - last < self.refused_interval:
            return False
        self._refused[key] = now
        self._refused.move_to_end(key)
        if len(self._refused) > 10_000:
            self._refused.popitem(last=False)
        return True

    # --- scoring

    def offend(self, ip, kind):
        """Score ``ip`` for ``kind`` (a key of SCORE_KINDS); ban past the threshold."""
        if not self.enabled or self.is_safe(ip):
            return
        points = self.scores_for.get(kind, 0)
        key = address_key(ip)
        if not points or key is None:
            return
        total = self.scores.add(key, points, time.monotonic())
        if total >= self.threshold and self.refusal(ip) is None:
            self.scores.reset(key)
            self.ban(key, SCORE_KINDS[kind], score=total, remote_ip=ip)

    def login_failed(self, ip, username, unknown_user):
        """Score a failed login: the address, and the user name (spraying)."""
        if not self.enabled or self.is_safe(ip):
            return
        if username:
            # A user name is at most 150 characters (Django's): longer ones
            # are no account's, and must not cost more memory.
            self.usernames.add(username[:150], 1, time.monotonic())
        self.offend(ip, "unknown_user" if unknown_user else "wrong_password")

    def login_delay(self, username):
        """Seconds to wait before checking a login of ``username`` (0: none).

        Past ``FTPSERVER_DEFENDER_USERNAME_THRESHOLD`` failures of the name
        within the window, from any address, each further failure doubles
        the delay, up to ``FTPSERVER_DEFENDER_USERNAME_MAX_DELAY``.
        """
        if not self.enabled or not username:
            return 0.0
        failures = self.usernames.total(username[:150], time.monotonic())
        excess = failures - self.username_threshold
        if excess < 0:
            return 0.0
        return float(min(self.username_max_delay, 2 ** min(excess, 30)))

    # --- bans

    def ban_duration(self, offence):
        """Seconds of a ban for the ``offence``-th time (1: the first)."""
        growth = (1 + self.ban_growth / 100) ** (offence - 1)
        return min(self.max_ban_time, self.ban_time * growth)

    def ban(self, network, reason, score=None, remote_ip=None):
        """Ban ``network`` now, here; the store writes it for everyone else."""
        from django.utils import timezone

        offence = self.offences.get(network, 0) + 1
        self.offences[network] = offence
        seconds = self.ban_duration(offence)
        now = timezone.now()
        expires_at = now + datetime.timedelta(seconds=seconds)
        self.bans.set(
            network,
            {
                "id": None,
                "reason": reason,
                "expires": expires_at.timestamp(),
                "offence": offence,
            },
        )
        self.store.add(
            {
                "network": network,
                "reason": reason,
                "created_at": now,
                "expires_at": expires_at,
                "created_by": audit.node_name(),
                "offence": offence,
                "score": score,
            }
        )
        logger.warning(
            "Banned %s for %d s (%s, score %s, offence %d).",
            network,
            seconds,
            reason,
            score,
            offence,
        )
        signals.dispatch(
            signals.ftp_address_banned,
            self.server.signal_sender,
            server=self.server,
            network=network,
            reason=reason,
            remote_ip=remote_ip,
            expires_at=expires_at,
            duration=seconds,
            offence=offence,
            score=score,
            by=audit.node_name(),
        )
        self.close_refused_sessions()

    def close_refused_sessions(self):
        """Close every open session whose address is now refused."""
        for handler in list(self.server.sessions):
            reason = self.refusal(handler.remote_ip)
            if reason is not None:
                handler.refuse(reason, REFUSAL_MESSAGES[reason])

    def apply(self, changes):
        """Take the store's news (on the loop): bans, offence counts, rules."""
        loaded = changes.get("full")
        refuse_more = False
        if loaded is not None:
            # Bans this server made that the store has not written yet.
            for network, ban in self.bans.items():
                if ban["id"] is None and loaded.get(network) is None:
                    loaded.set(network, ban)
            self.bans = loaded
            self.offences = {**changes.get("offences", {}), **self.offences}
            refuse_more = True
        now = time.time()
        for view in changes.get("bans", ()):
            network = view["network"]
            current = self.bans.get(network)
            active = view["active"] and (
                view["expires"] is None or view["expires"] > now
            )
            if active:
                if current is not None and outlasts(current, view):
                    continue
                self.bans.set(network, view)
                self.offences[network] = max(
                    self.offences.get(network, 0), view["offence"]
                )
                refuse_more = refuse_more or current is None
            elif current is not None and current["id"] in (None, view["id"]):
                self.bans.discard(network)
                # Another active ban of the network may be in the table.
                self.store.reload_soon()
        rules = changes.get("rules")
        if rules is not None:
            self.safelist = NetworkMap(
                self._configured_safelist
                + [(net, kind) for net, kind in rules if kind == "safelist"]
            )
            self.blocklist = NetworkMap(
                (net, kind) for net, kind in rules if kind == "blocklist"
            )
            refuse_more = True
        if refuse_more:
            self.close_refused_sessions()
