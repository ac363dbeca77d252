"""Keep a server's in-memory view of bans and network rules in step with the database.

The store is a participant of the server's shared-state thread
(``ftpserver_core.state``), which does every query: it inserts the bans the
server decided, polls for bans and rules changed anywhere (another process,
another node, the admin) every ``FTPSERVER_DEFENDER_POLL_INTERVAL`` seconds,
and hands what changed to the IO loop. The loop never waits on it; while
the database is down the last view stays in force and local bans wait in
memory to be written.

Consistency: a ban made anywhere is enforced by every server within one
poll interval plus the time of a query (1 s by default). A ban row deleted
(rather than lifted) is noticed at the next full reload, every
``FULL_RELOAD`` polls; the admin only deletes bans that are over.
"""

import datetime
import logging
import queue
import time

from django.db import close_old_connections
from django.utils import timezone

from .addresses import NetworkMap

logger = logging.getLogger("ftpserver_core.defender")

# Bans count as repeat offences for this long (their growth of the ban time).
OFFENCE_MEMORY = datetime.timedelta(days=30)
# Polls between two full reloads of the active bans (catches deleted rows).
FULL_RELOAD = 30
# changed_at is set by each writer's clock: poll a little into the past so a
# writer whose clock is behind (or whose transaction committed late) is seen.
OVERLAP = datetime.timedelta(seconds=5)


def ban_view(ban):
    """Return the loop's view of a Ban row: a small dict."""
    return {
        "id": ban.pk,
        "network": ban.network,
        "reason": ban.reason,
        "expires": ban.expires_at.timestamp() if ban.expires_at else None,
        "active": ban.lifted_at is None,
        "offence": ban.offence,
    }


class BanStore:
    """The link between one server's defender and the Ban/NetworkRule tables."""

    def __init__(self, deliver, poll_interval=1.0):
        """``deliver(changes)`` is called from the state thread; it hands them to the loop."""
        self.deliver = deliver
        self.poll_interval = poll_interval
        self._new_bans = queue.SimpleQueue()
        self._state = None
        self._next_poll = 0.0
        self._since = None
        self._seen = {}  # ban id -> changed_at already delivered
        self._rules_stamp = None
        self._polls = 0
        self._full_requested = False
        self._failing = False

    def start(self, state):
        """Sync in ``state``'s rounds (its thread does every query)."""
        self._state = state
        state.add_participant(self)

    def add(self, fields):
        """Queue a ban for insertion (called on the loop); returns at once."""
        self._new_bans.put(fields)
        self._next_poll = 0.0
        if self._state is not None:
            self._state.wake()

    # --- the state thread

    def sync(self, state=None):
        """Poll when due: one round's work of the defender."""
        now = time.monotonic()
        if now < self._next_poll:
            return
        # A little early: the state's rounds come about one interval apart.
        self._next_poll = now + self.poll_interval * 0.9
        close_old_connections()
        try:
            changes = self._sync()
        except Exception as exc:
            if not self._failing:
                logger.warning(
                    "The defender cannot reach the database (%s); bans "
                    "already known stay in force, new ones are written "
                    "when it answers.",
                    exc,
                )
            self._failing = True
        else:
            if self._failing:
                logger.warning("The defender reaches the database again.")
            self._failing = False
            if changes:
                self.deliver(changes)
        finally:
            close_old_connections()

    def _sync(self):
        from ..models import Ban

        changes = {"bans": []}
        self._insert_new(changes)
        now = timezone.now()
        full = (
            self._since is None
            or self._full_requested
            or (self._polls % FULL_RELOAD == 0)
        )
        self._full_requested = False
        if full:
            changes.update(self._full_load(now))
        else:
            rows = Ban.objects.filter(changed_at__gte=self._since - OVERLAP)
            bans = [ban for ban in rows if self._seen.get(ban.pk) != ban.changed_at]
            for ban in bans:
                self._seen[ban.pk] = ban.changed_at
            changes["bans"] += [ban_view(ban) for ban in bans]
        self._since = now
        self._polls += 1
        # Rules by their (count, newest change) stamp each poll, and in full
        # with the bans: a change stamped by a node whose clock is behind
        # does not move the newest change.
        rules = self._rules_if_changed(force=full)
        if rules is not None:
            changes["rules"] = rules
        if not changes["bans"]:
            del changes["bans"]
        return changes

    def reload_soon(self):
        """Reload every active ban at the next poll (called on the loop)."""
        self._full_requested = True

    def _full_load(self, now):
        from ..models import Ban

        active = list(Ban.objects.active(now))
        self._seen = {ban.pk: ban.changed_at for ban in active}
        offences = {}
        # A ban an admin lifted was a mistake, not an offence.
        recent = Ban.objects.filter(
            created_at__gte=now - OFFENCE_MEMORY, lifted_at__isnull=True
        )
        for network in recent.values_list("network", flat=True):
            offences[network] = offences.get(network, 0) + 1
        # Built here, not on the loop: tens of thousands of bans (an IPv6
        # /48 is 65,536 /64s) took seconds to parse.
        views = [ban_view(ban) for ban in active]
        bans = NetworkMap()
        for view in views:
            current = bans.get(view["network"])
            if current is None or not outlasts(current, view):
                bans.set(view["network"], view)
        return {"full": bans, "offences": offences}

    def _insert_new(self, changes):
        from ..models import Ban

        inserted = changes["bans"]
        while True:
            try:
                fields = self._new_bans.get_nowait()
            except queue.Empty:
                break
            try:
                # Another process may have banned the same network a moment
                # ago: one row, not two.
                existing = (
                    Ban.objects.active()
                    .filter(network=fields["network"])
                    .order_by("-expires_at")
                    .first()
                )
                ban = existing or Ban.objects.create(**fields)
            except Exception:
                self._new_bans.put(fields)  # kept for the next try
                raise
            inserted.append(ban_view(ban))
            self._seen[ban.pk] = ban.changed_at

    def _rules_if_changed(self, force=False):
        from django.db.models import Count, Max

        from ..models import NetworkRule

        stamp = NetworkRule.objects.aggregate(n=Count("id"), last=Max("changed_at"))
        stamp = (stamp["n"], stamp["last"])
        if stamp == self._rules_stamp and not force:
            return None
        self._rules_stamp = stamp
        return list(NetworkRule.objects.values_list("network", "kind"))


def outlasts(current, view):
    """True when the ``current`` ban of a network holds over ``view``'s.

    The longer of two bans of one network (two nodes at once, an admin's on
    top) is enforced; a row replaces itself (extended, shortened), and the
    database's row replaces the local copy of a ban this server made.
    """
    if current.get("id") in (None, view["id"]):
        return False
    if current["expires"] is None:
        return True
    return view["expires"] is not None and current["expires"] >= view["expires"]
