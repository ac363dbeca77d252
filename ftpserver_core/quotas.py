"""Quotas: what an account's home may hold, and how far one upload may grow.

An account's usage (bytes and regular files in its home) is kept in the
shared state (``QuotaUsage``) and changed by every upload, delete and
overwriting rename. Room is reserved before data is written: each process
holds a lease per account (``FTPSERVER_QUOTA_LEASE_BYTES``/``_FILES``)
granted in the state thread; uploads take from it on the IO loop without
waiting. A chunk that does not fit pauses its data connection until more is
granted; when nothing more can be, the upload ends with ``552``. A new file
needs a file from the lease before its ``150``. The changes are written each
round of the state thread (``sync``), the lease given back once the
account's uploads in this process have been idle for a round.

A file written in place (a direct upload, APPE, REST+STOR, STOU) changes
the disk as it is written, but its change is queued only when the upload
ends. Another session of this process may delete, replace or rename the
file meanwhile, or write it too: each such file is known (``_Written``, by
device and inode) with the size the usage counts for it, and brought up to
date (a checkpoint: one ``stat``) before a command measures it to free it,
and when each of its uploads ends. A file deleted or replaced meanwhile
then adds nothing more, whatever is still written into it. Appends alone
count what they wrote, so that concurrent appends from several processes
each count theirs. Such a file is also locked for its whole transfer
(``uploads.Upload._open_locked``, ``flock``): a command of another session,
of any process, that would write, delete, rename or replace it is refused
(450, ``busy_reply``), which keeps the usage exact across processes; the
bookkeeping above then serves where ``flock`` is not available.

Nothing here runs for a session without a quota or a maximum upload size:
its handler's ``quota`` is None.
"""

import collections
import logging
import os
import stat
import threading
import time

from . import signals
from .conf import settings
from .filesystems import quoted
from .uploads import AGAIN, TEMP_PREFIX, regular_size

logger = logging.getLogger("ftpserver_core.quotas")


def format_size(n):
    """Return ``n`` bytes for a reply: "512 bytes", "10.0 MiB"."""
    if n < 1024:
        return f"{n} byte" if n == 1 else f"{n} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"


def busy_reply(path):
    """Return the 450 refusing a command on a file another session uploads."""
    return (
        f"450 {quoted(path)}: another session is uploading this file; try again later."
    )


def scan_home(home):
    """Return ``(bytes, files)`` of the regular files under ``home``.

    Sizes are the files' own (``lstat``); symbolic links are not followed
    (nor counted), nor are atomic uploads' temporary files. Raise OSError
    when a directory cannot be read.
    """
    total_bytes = total_files = 0

    def fail(exc):
        raise exc

    for directory, _dirs, names in os.walk(home, onerror=fail):
        for name in names:
            if name.startswith(TEMP_PREFIX):
                continue
            size, files = regular_size(os.path.join(directory, name))
            total_bytes += size
            total_files += files
    return total_bytes, total_files


class _HeldCommand:
    """A command waiting for a file of the quota."""

    __slots__ = ("resume", "gen")

    def __init__(self, resume):
        self.resume = resume
        self.gen = 0


def _started(waiter):
    return waiter.seq


class _Written:
    """A file being written in place by uploads of this process."""

    __slots__ = ("key", "uploads", "bytes", "files", "gone")

    def __init__(self, key, n_bytes, n_files):
        self.key = key  # (device, inode)
        self.uploads = []  # its uploads in progress
        # What the usage counts for it (queued changes included).
        self.bytes = n_bytes
        self.files = n_files
        self.gone = False  # deleted or replaced by a command of this process

    def appending(self):
        """True when only appends write it: they count what they wrote."""
        return all(u.append and not u.roll_back for u in self.uploads)


class AccountQuota:
    """One account's quota in this process: its lease and its unwritten changes."""

    def __init__(self, account_id, limits):
        self.account_id = account_id
        self.limits = limits  # (quota_bytes, quota_files); None: no such quota
        self.lease = [0, 0]  # bytes, files granted and not taken yet
        # Usage change, and lease taken, not written yet (settle_quota's tuple).
        self.changes = [0, 0, 0, 0]
        self.sessions = 0
        self.active = 0  # uploads in progress
        self.busy = False  # an upload started or ended since the last round
        self.want = False  # ask the state thread for more
        self.asked = 0  # requests the state thread took
        self.byte_waiters = []  # paused uploads, oldest first
        self.file_waiters = collections.deque()  # held commands
        self.usage = (0, 0)  # last read, for replies
        self.short_until = 0.0  # a grant fell short: refill no sooner
        self.writing = {}  # (device, inode) -> _Written (on the loop)

    def used(self, kind):
        """What the home holds (0: bytes, 1: files) as last read, with changes since."""
        return self.usage[kind] + self.changes[kind]

    def idle(self):
        return not (self.active or self.busy or self.byte_waiters or self.file_waiters)


class QuotaTracker:
    """The server's quotas: the loop's side, and a shared-state participant."""

    def __init__(self, server):
        self.server = server
        self.accounts = {}
        self._lock = threading.Lock()
        self._started = 0
        self.lease_bytes = settings.QUOTA_LEASE_BYTES
        self.lease_files = settings.QUOTA_LEASE_FILES

    def __repr__(self):
        return "<QuotaTracker>"

    # --- on the loop

    def session(self, policy):
        """Return the SessionQuota of a session that logged in, or None."""
        limits = (policy.quota_bytes, policy.quota_files)
        account = None
        if limits != (None, None):
            with self._lock:
                account = self.accounts.get(policy.account_id)
                if account is None:
                    account = self.accounts[policy.account_id] = AccountQuota(
                        policy.account_id, limits
                    )
                account.limits = limits  # the latest login's
                account.sessions += 1
        elif policy.max_upload_size is None:
            return None
        return SessionQuota(self, account, policy.max_upload_size)

    def _ask(self, account):
        """Have the state thread ask for room (the lock is held)."""
        if not account.want:
            account.want = True
            self.server.state.wake()

    def take(self, account, n_bytes, n_files):
        """Take room from the lease; False when it holds too little."""
        with self._lock:
            lease = account.lease
            if lease[0] < n_bytes or lease[1] < n_files:
                return False
            lease[0] -= n_bytes
            lease[1] -= n_files
            quota_bytes, quota_files = account.limits
            if (
                (quota_bytes is not None and lease[0] < self.lease_bytes // 2)
                or (quota_files is not None and lease[1] < self.lease_files // 2)
            ) and time.monotonic() >= account.short_until:
                self._ask(account)
            return True

    def wait(self, account, waiter, files=False):
        """Queue ``waiter`` until a grant asked after now arrives."""
        with self._lock:
            waiter.gen = account.asked + 1
            if files:
                account.file_waiters.append(waiter)
            else:
                account.byte_waiters.append(waiter)
                account.byte_waiters.sort(key=_started)
            account.busy = True
            self._ask(account)

    def change(self, account, d_bytes, d_files, t_bytes=0, t_files=0, ended=False):
        """Queue a usage change (and the lease it took) for the next round."""
        with self._lock:
            changes = account.changes
            changes[0] += d_bytes
            changes[1] += d_files
            changes[2] += t_bytes
            changes[3] += t_files
            if ended:
                account.active -= 1
                account.busy = True

    def started(self, account):
        """Count an upload in progress; return its place in the start order."""
        with self._lock:
            account.active += 1
            account.busy = True
            self._started += 1
            return self._started

    def checkpoint(self, account, written, size=None):
        """Queue what ``written`` changed since last counted; return the change.

        ``size``: the file's size now (None: not known, only appends
        counted). An upload's bytes counted are marked so.
        """
        if written.gone:
            return 0, 0
        uploads = written.uploads
        if written.appending() or size is None:
            n_bytes = written.bytes
            for upload in uploads:
                n_bytes += upload.bytes_written - upload.quota.counted
        else:
            n_bytes = size
        for upload in uploads:
            upload.quota.counted = upload.bytes_written
        d_bytes, d_files = n_bytes - written.bytes, 1 - written.files
        written.bytes, written.files = n_bytes, 1
        if d_bytes or d_files:
            self.change(account, d_bytes, d_files)
        return d_bytes, d_files

    def give_back(self, account, n_bytes=0, n_files=0, session_ended=False):
        """Put room taken and not used back in the lease."""
        with self._lock:
            account.lease[0] += n_bytes
            account.lease[1] += n_files
            if session_ended:
                account.sessions -= 1

    def _granted(self, account, gen, granted, usage):
        with self._lock:
            account.lease[0] += granted[0]
            account.lease[1] += granted[1]
            if usage is not None:
                account.usage = usage
                account.short_until = time.monotonic() + settings.STATE_POLL_INTERVAL
        waiters = account.file_waiters
        while waiters:
            waiter = waiters[0]
            if self.take(account, 0, 1):
                waiters.popleft()
                waiter.resume(True)
            elif waiter.gen <= gen:
                waiters.popleft()
                waiter.resume(False)
            else:
                break
        self.serve(account, gen)
        if account.file_waiters or account.byte_waiters:
            with self._lock:
                self._ask(account)

    def serve(self, account, gen=0):
        """Resume paused uploads, oldest first, from the lease.

        When the last grant fell short of the oldest one's need, the
        youngest ends (552) and its room goes to the older ones: paused
        together, each holding part of the room, none would finish.
        """
        waiters = account.byte_waiters
        while waiters:
            waiter = waiters[0]
            if self.take(account, waiter.held_bytes, 0):
                waiters.pop(0)
                waiter.resume(True)
            elif waiter.gen <= gen:
                waiters.pop().resume(False)
            else:
                break

    # --- the state thread

    def sync(self, state):
        """Write the changes, give idle leases back, ask for the room wanted."""
        with self._lock:
            changes, requests = self._collect(idle_return=True)
        process = state.ensure_process()
        backend = state.backend
        if changes:
            try:
                backend.settle_quota(process, changes)
            except Exception:
                with self._lock:
                    for account_id, values in changes.items():
                        account = self.accounts.get(account_id)
                        if account is None:
                            account = self.accounts[account_id] = AccountQuota(
                                account_id, (None, None)
                            )
                        for i, value in enumerate(values):
                            account.changes[i] += value
                    self._ask_again(requests)
                raise
        for n, (account, gen, want) in enumerate(requests):
            try:
                granted = backend.grant_quota(
                    process, account.account_id, account.limits, *want
                )
                usage = None
                if granted[0] < want[0] or granted[1] < want[1]:
                    usage = backend.quota_usage(account.account_id)
            except Exception:
                with self._lock:
                    self._ask_again(requests[n:])
                raise
            self.server.call_on_loop(self._granted, account, gen, granted, usage)

    @staticmethod
    def _ask_again(requests):
        """Ask next round for what a failed round did not ask (the lock is held).

        Paused uploads and held commands wait for a grant: a request lost
        with the round would leave them waiting until their timeouts.
        """
        for account, _gen, _want in requests:
            account.want = True

    def flush(self, state):
        """Write what is left and give every lease back (the server stops)."""
        with self._lock:
            for account in self.accounts.values():
                account.active = 0
                account.busy = False
            changes, _ = self._collect(idle_return=True, asking=False)
        if changes and state.process is not None:
            state.backend.settle_quota(state.process, changes)

    def _collect(self, idle_return, asking=True):
        changes, requests = {}, []
        for account_id, account in list(self.accounts.items()):
            values = account.changes
            if idle_return and account.idle() and account.lease != [0, 0]:
                values[2] += account.lease[0]
                values[3] += account.lease[1]
                account.lease = [0, 0]
            if any(values):
                changes[account_id] = tuple(values)
                account.changes = [0, 0, 0, 0]
            account.busy = False
            if asking and account.want:
                account.want = False
                account.asked += 1
                quota_bytes, quota_files = account.limits
                need_bytes = sum(w.held_bytes for w in account.byte_waiters)
                want = (
                    self.lease_bytes + need_bytes if quota_bytes is not None else 0,
                    self.lease_files + len(account.file_waiters)
                    if quota_files is not None
                    else 0,
                )
                requests.append((account, account.asked, want))
            elif not account.sessions and account.idle() and account.lease == [0, 0]:
                del self.accounts[account_id]
        return changes, requests


class SessionQuota:
    """A session's limits: its account's quota (or None), its maximum upload size."""

    __slots__ = ("tracker", "account", "max_upload_size", "file_slot")

    def __init__(self, tracker, account, max_upload_size):
        self.tracker = tracker
        self.account = account
        self.max_upload_size = max_upload_size
        self.file_slot = False  # a file taken from the lease, not used yet

    def ended(self):
        """The session logged out: its unused file goes back to the lease."""
        if self.account is not None:
            self.tracker.give_back(
                self.account, n_files=int(self.file_slot), session_ended=True
            )
            self.file_slot = False

    def measure(self, path, unless_same=None, seen=False):
        """Return ``(bytes, files, written)`` of the regular file at ``path`` (None: nothing).

        A file an upload of this process is writing in place is first
        brought up to date in the usage (``written``: its _Written).
        ``seen``: what uploads.guard() yielded; a regular file that is not
        that one appeared unheld, and AGAIN is returned for it.
        """
        account = self.account
        if account is None:
            return None
        if unless_same is not None:
            try:
                if os.path.samefile(path, unless_same):
                    return None  # renaming a file onto itself changes nothing
            except OSError:
                pass
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        if seen is not False and seen != (st.st_dev, st.st_ino):
            return AGAIN
        written = (
            account.writing.get((st.st_dev, st.st_ino)) if account.writing else None
        )
        if written is not None:
            self.tracker.checkpoint(account, written, st.st_size)
        return st.st_size, 1, written

    def freed(self, size):
        """The file measured was removed or replaced."""
        self.tracker.change(self.account, -size[0], -size[1])
        self.replaced(size)

    def replaced(self, size):
        """The file measured left the home (its size is accounted by the caller)."""
        written = size[2]
        if written is not None:
            # Its uploads write outside the home from now on.
            written.gone = True
            written.bytes = written.files = 0

    def need_file(self, handler, cmd, arg, path, restart=0):
        """Take a file for a new file; False when the command waits or is refused.

        A command that waits runs again (the session's next commands held)
        once room is granted, or is answered 552.
        """
        account = self.account
        if account is None or account.limits[1] is None or self.file_slot:
            return True
        if self.tracker.take(account, 0, 1):
            self.file_slot = True
            return True
        handler.hold_input()

        def resume(granted):
            if handler._closed:
                if granted:
                    self.tracker.give_back(account, n_files=1)
                return
            if granted:
                self.file_slot = True
                handler._restart_position = restart
                handler.process_command(cmd, arg)
            else:
                limit, used = account.limits[1], account.used(1)
                handler.send_signal(
                    signals.ftp_quota_exceeded,
                    username=handler.username,
                    path=path,
                    ftp_path=handler.fs.client_path(path),
                    reason="quota_files",
                    limit=limit,
                    used=used,
                )
                handler.respond(
                    f"552 Quota exceeded: the home holds {used} of {limit} files; "
                    "upload refused."
                )
            handler.resume_held_input()

        self.tracker.wait(account, _HeldCommand(resume), files=True)
        return False

    def lost(self, upload):
        """Count the new files ``upload`` created that other sessions took.

        Created and then deleted, replaced or written by another session
        before it was locked: that session counted it as a file that was
        there (uploads.Upload._open_locked).
        """
        if self.account is not None and upload.lost_files:
            self.tracker.change(self.account, 0, upload.lost_files)

    def start(self, handler, upload):
        """Attach an UploadQuota to ``upload`` (after need_file)."""
        account = self.account
        self.lost(upload)
        files = 0
        if account is not None and self.file_slot and not upload.existed:
            files, self.file_slot = 1, False
        upload.quota = quota = UploadQuota(self, handler, upload, files)
        if account is not None:
            quota.seq = self.tracker.started(account)
            if not upload.atomic:
                self._writing(account, upload)

    @staticmethod
    def _writing(account, upload):
        """Know the file ``upload`` writes in place (it was just opened)."""
        try:
            st = os.fstat(upload._file.fileno())
        except (OSError, AttributeError, ValueError):
            return  # measured by upload.size_change() at its end
        key = (st.st_dev, st.st_ino)
        written = account.writing.get(key)
        if written is None:
            # Counted as it was before (a STOR's truncation not yet counted).
            written = account.writing[key] = _Written(
                key, upload.size_before, int(upload.existed)
            )
        written.uploads.append(upload)
        upload.quota.written = written


class UploadQuota:
    """One upload's room: taken from the lease chunk by chunk, settled at its end."""

    __slots__ = (
        "session",
        "handler",
        "end",
        "ceiling",
        "reserved",
        "files",
        "held",
        "held_bytes",
        "channel",
        "gen",
        "done",
        "seq",
        "written",
        "counted",
    )

    def __init__(self, session, handler, upload, files):
        self.session = session
        self.handler = handler
        self.end = upload.offset  # where the next byte lands
        limit = session.max_upload_size
        # A file already past the limit may be rewritten, not grown.
        self.ceiling = None if limit is None else max(limit, upload.size_before)
        self.reserved = 0
        self.files = files
        self.held = []
        self.held_bytes = 0
        self.channel = None
        self.gen = 0
        self.done = False
        self.seq = 0
        self.written = None  # the _Written of a file written in place
        self.counted = 0  # bytes_written counted by checkpoints (appends)

    def admit(self, channel, chunk):
        """Say whether ``chunk`` may be written now; else it is held or refused."""
        n = len(chunk)
        if self.ceiling is not None and self.end + n > self.ceiling:
            self._exceeded(channel, "max_upload_size", self.end + n)
            return False
        self.end += n
        if self.held:  # paused: in order behind what waits
            self.held.append(chunk)
            self.held_bytes += n
            channel.del_channel()  # a bandwidth limit's timer may have resumed it
            return False
        account = self.session.account
        if account is None or account.limits[0] is None:
            return True
        if self.session.tracker.take(account, n, 0):
            self.reserved += n
            return True
        # Stop reading until room is granted (pyftpdlib's throttling way).
        self.held, self.held_bytes, self.channel = [chunk], n, channel
        channel.del_channel()
        self.session.tracker.wait(account, self)
        return False

    def resume(self, granted):
        """Room was granted for what is held (or cannot be): go on, or end."""
        channel, held = self.channel, self.held
        self.held, self.channel = [], None
        if self.done or channel._closed:
            if granted:
                self.session.tracker.give_back(
                    self.session.account, n_bytes=self.held_bytes
                )
            self.held_bytes = 0
            return
        if not granted:
            self.held_bytes = 0
            self._exceeded(channel, "quota_bytes", 0)
            return
        self.reserved += self.held_bytes
        self.held_bytes = 0
        for chunk in held:
            channel.write_chunk(chunk)
            if channel._closed:
                return
        if getattr(channel, "_throttle_timer", None) is not None:
            return  # a bandwidth limit holds it too: its timer resumes it
        channel.add_channel()
        pending = getattr(channel.socket, "pending", None)
        if pending is not None and pending():
            # TLS: what OpenSSL read ahead raises no socket event.
            channel.handle_read_event()

    def _exceeded(self, channel, reason, size):
        handler, upload = self.handler, channel.file_obj
        account = self.session.account
        # Cut short by a limit, it leaves nothing of itself (a direct one
        # neither): its room goes to the uploads that can finish.
        upload.roll_back = True
        if reason == "max_upload_size":
            limit, used = self.session.max_upload_size, size
            reply = (
                "552 Maximum upload size exceeded: the file would grow past "
                f"{format_size(limit)}; upload aborted."
            )
        else:
            limit, used = account.limits[0], account.used(0)
            rest = " and uploads in progress reserve the rest" if used < limit else ""
            reply = (
                f"552 Quota exceeded: the home holds {format_size(used)} of "
                f"{format_size(limit)}{rest}; upload aborted."
            )
        with handler.reply_batch():
            handler.send_signal(
                signals.ftp_quota_exceeded,
                username=handler.username,
                path=upload.name,
                ftp_path=handler.fs.client_path(upload.name) if handler.fs else None,
                reason=reason,
                limit=limit,
                used=used,
            )
            channel.abort("quota_exceeded", reply)

    def busy(self, upload):
        """An atomic upload's replace was refused (FileBusy): end it with 450.

        Return False when its data channel is not found (an error then).
        """
        handler = self.handler
        channel = getattr(handler, "data_channel", None)
        if channel is None or channel.file_obj is not upload:
            return False
        channel.failure = "write_error"
        channel.transfer_finished = False
        path = handler.fs.client_path(upload.name) if handler.fs else upload.name
        channel._resp = (busy_reply(path), logger.info)
        return True

    def finished(self, upload):
        """The upload was committed or discarded: queue what it changed."""
        if self.done:
            return
        self.done = True
        account = self.session.account
        if account is None:
            return
        if self.held:
            self.held, self.held_bytes = [], 0
            try:
                account.byte_waiters.remove(self)
            except ValueError:
                pass
        tracker = self.session.tracker
        if self.written is not None:
            d_bytes, d_files = self._settle(upload)
            queued = True
        else:
            queued = False
            try:
                d_bytes, d_files = upload.size_change()
            except OSError as exc:
                logger.warning("Cannot measure the upload %s: %s", upload.name, exc)
                d_bytes, d_files = 0, 0
        # What the change took of the room reserved; the rest goes back to
        # the lease at once (an aborted upload's room serves the others).
        t_bytes = min(max(d_bytes, 0), self.reserved)
        t_files = min(max(d_files, 0), self.files)
        if queued:
            tracker.change(account, 0, 0, t_bytes, t_files, ended=True)
        else:
            tracker.change(account, d_bytes, d_files, t_bytes, t_files, ended=True)
        tracker.give_back(account, self.reserved - t_bytes, self.files - t_files)
        if account.byte_waiters and self.reserved > t_bytes:
            tracker.serve(account)

    def _settle(self, upload):
        """Queue what the file written in place changed; return the change."""
        written, account = self.written, self.session.account
        tracker = self.session.tracker
        st = upload.final_stat
        if upload.unlinked and not written.gone:
            # Its roll-back removed it: the file counts no more.
            d_bytes, d_files = -written.bytes, -written.files
            tracker.change(account, d_bytes, d_files)
            written.gone = True
            written.bytes = written.files = 0
        else:
            # Still in the home (or removed by another process: what it was
            # made into is counted, ftpquotascan returns the excess).
            d_bytes, d_files = tracker.checkpoint(
                account, written, None if st is None else st.st_size
            )
        written.uploads.remove(upload)
        if not written.uploads and account.writing.get(written.key) is written:
            del account.writing[written.key]
        return d_bytes, d_files
