"""Passive ports across nodes: each node behind one load balancer has its own range.

A load balancer in front of several nodes routes a passive data connection
by its port. Nodes sharing the database serve the same accounts, typically
behind one address: when two of them may open the same port, a client's
data connection can land on the node that did not open it. So the
``ftpserver`` command refuses to start when a live process of another node
has a passive range overlapping its own: a deployment check (E060, with the
command's own options) and again once this process is registered, in case
both nodes started at once (of two racing starts at least one then sees the
other). A node taking any free port gets a warning (W060): its data
connections cannot be routed per node at all.

Processes of one node share its range legitimately: on one host the kernel
gives a port to one process and the next tries another port, which is how
prefork workers share theirs. Nodes announcing different masquerade
addresses are reached at their own addresses and may use the same ports. A
process that stopped heartbeating (``FTPSERVER_STATE_EXPIRY``) no longer
counts. ``SILENCED_SYSTEM_CHECKS = ["ftpserver_core.E060"]`` turns the
refusal off (the check and the start-up guard).
"""

import contextlib
import contextvars
import logging
import os

from django.conf import settings as django_settings
from django.core import checks
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

from .options import OptionError, ServerOptions

logger = logging.getLogger("ftpserver_core.state")

# Run by the ``ftpserver`` command once its options are known (besides
# ``check --deploy --database default``).
TAG = "ftpserver_scaleout"
ERROR_ID = "ftpserver_core.E060"
WARNING_ID = "ftpserver_core.W060"

_options = contextvars.ContextVar("ftpserver_scaleout_options", default=None)


class Overlap(Exception):
    """Another node's live process takes some of this server's passive ports."""


def runs(ports):
    """Return ``[[first, last], ...]`` of a collection of ports."""
    found = []
    for port in sorted(set(ports)):
        if found and port == found[-1][1] + 1:
            found[-1][1] = port
        else:
            found.append([port, port])
    return found


def text(ranges):
    """Show runs as '12345,30000-30100'."""
    return ",".join(f"{lo}-{hi}" if hi > lo else f"{lo}" for lo, hi in ranges)


def _overlap(ours, theirs):
    found = []
    for lo, hi in ours:
        for other_lo, other_hi in theirs:
            first, last = max(lo, other_lo), min(hi, other_hi)
            if first <= last:
                found.append((first, last))
    return found


def _apart(ours, theirs):
    """True when both announce a masquerade address, and not the same one."""
    return bool(ours and theirs and ours != theirs)


@contextlib.contextmanager
def checking(options):
    """Have the checks judge ``options`` (the command's) instead of the settings."""
    token = _options.set(options)
    try:
        yield
    finally:
        _options.reset(token)


def problems(node, options, processes):
    """Return ``(errors, warnings)``: sentences about other nodes' processes."""
    ours = runs(options.passive_ports or ())
    masquerade = options.masquerade_address or ""
    overlaps, theirs, unrouted = {}, {}, []
    for process in processes:
        if process.node == node or _apart(masquerade, process.masquerade_address):
            continue
        other = [list(run) for run in process.passive_ports]
        if not ours or not other:
            if process.node not in unrouted:
                unrouted.append(process.node)
            continue
        shared = _overlap(ours, other)
        if shared:
            overlaps.setdefault(process.node, []).extend(shared)
            theirs.setdefault(process.node, []).extend(other)
    errors = [
        f"This node ({node!r}) would take the passive ports {text(ours)}, and "
        f"node {other!r}, live on the same database, takes "
        f"{text(runs(_ports(theirs[other])))}: both would open "
        f"{text(runs(_ports(shared)))}, so a load balancer cannot route their "
        "data connections by port."
        for other, shared in overlaps.items()
    ]
    if not ours:
        warnings = [
            f"This node ({node!r}) takes any free port for passive data "
            f"connections, and node {other!r} is live on the same database: "
            "behind a load balancer, data connections cannot be routed by port "
            "to the node that opened them."
            for other in unrouted
        ]
    else:
        warnings = [
            f"Node {other!r}, live on the same database, takes any free port "
            f"for passive data connections, {text(ours)} of this node ({node!r}) "
            "included: behind a load balancer, data connections cannot be "
            "routed by port to the node that opened them."
            for other in unrouted
        ]
    return errors, warnings


def _ports(ranges):
    for lo, hi in ranges:
        yield from range(lo, hi + 1)


def _backend():
    """The shared state's backend, or None when other processes cannot be seen."""
    from .state import get_backend

    try:
        backend = get_backend()
    except ValueError:
        return None  # check_state() reports it
    return backend if backend.shared else None


def check_passive_ports(app_configs=None, databases=None, **kwargs):
    """Refuse passive ports other live nodes take (E060); warn without a range (W060)."""
    from . import audit

    if not databases or DEFAULT_DB_ALIAS not in databases:
        return []  # a database check: run with --database (the command does)
    options = _options.get()
    if options is None:
        try:
            options = ServerOptions.from_settings()
        except OptionError:
            return []  # check_settings() reports it
    backend = _backend()
    if backend is None:
        return []
    try:
        processes = backend.live_processes()
    except Exception as exc:
        # Not migrated, not reachable (or not allowed): the server starts
        # without its database, as it always has.
        logger.warning("Passive ports of other nodes not checked: %s", exc)
        return []
    finally:
        backend.close()
    errors, warnings = problems(audit.node_name(), options, processes)
    hint = (
        "Give each node its own range (FTPSERVER_PASSIVE_PORTS or "
        "--passive-ports); nodes reached at their own public addresses say so "
        "with FTPSERVER_MASQUERADE_ADDRESS."
    )
    return [checks.Error(message, hint=hint, id=ERROR_ID) for message in errors] + [
        checks.Warning(message, hint=hint, id=WARNING_ID) for message in warnings
    ]


class Claim:
    """This server's registration, made before it serves; released at its stop."""

    def __init__(self, backend=None, key=None):
        self.backend = backend
        self.key = key

    def release(self):
        """Forget a supervisor's registration (its workers have their own)."""
        if self.backend is None:
            return
        try:
            self.backend.unregister_process(self.key)
        except DatabaseError:
            pass  # it lapses after FTPSERVER_STATE_EXPIRY seconds
        finally:
            self.backend.close()
            self.backend = None


def claim(server, options):
    """Register ``server`` and raise :class:`Overlap` when another node conflicts.

    A single process registers through its own shared state (its row is then
    the one it heartbeats); a prefork supervisor registers a row of its own
    until its workers have theirs, released when it stops.
    """
    from . import audit
    from .state import where

    if ERROR_ID in django_settings.SILENCED_SYSTEM_CHECKS:
        return Claim()
    state = getattr(server, "state", None)
    backend = state.backend if state is not None else _backend()
    if backend is None or not backend.shared:
        return Claim()
    node = audit.node_name()
    try:
        if state is not None:
            key = state.ensure_process()
            held = Claim()
        else:
            key = backend.register_process(node, os.getpid(), **where(options))
            held = Claim(backend, key)
        others = [p for p in backend.live_processes() if p.key != key]
        errors, _ = problems(node, options, others)
        if errors:
            backend.unregister_process(key)
            if state is not None:
                state.process = None
            else:
                backend.close()
            raise Overlap(errors[0])
    except (DatabaseError, RuntimeError) as exc:
        # The server starts without its database, as it always has; the
        # state thread registers it once the database answers.
        logger.warning("Passive ports of other nodes not checked: %s", exc)
        return Claim()
    finally:
        # The main thread idles on the IO loop from here: no connection kept.
        connections.close_all()
    return held
