"""Files being received: counted, hashed, and put in place only when whole.

In ``atomic`` mode (``FTPSERVER_UPLOAD_MODE``) a fresh upload is written to a
hidden temporary file next to its target, ``.ftpupload-<token>-<name>``, and
renamed to the target once the data connection ended cleanly and every byte
was written: a program watching the directory never sees a partial file, and
an upload that fails leaves nothing. The temporary file takes the mode of the
file it replaces; a target that is a symbolic link is replaced where it
points. A resumed upload (REST+STOR into an existing file, APPE onto one)
writes in place, as in ``direct`` mode: that file was visible before, and
concurrent appends must all land (under a quota they are serialised
instead: see the lock below).

The upload is journaled before its temporary file is created (see
``audit/journal.py``), so a crash leaves nothing behind that the next start
does not find and remove.

An upload under a quota or a maximum upload size carries ``quota`` (see
``quotas.py``): it is told when the upload ends. An atomic upload's
``size_change()`` says what it added to the home; a file written in place
is measured by the quota itself (``final_stat``: the file as it was left,
and checkpoints whenever another command deletes or replaces it). An upload
cut short by the maximum upload size or a quota is rolled back
(``roll_back``): a fresh direct upload is removed, an appended or resumed
file truncated back to its size before the upload.

Under a quota or a maximum upload size (``lock``), a file written in place
is locked for the whole transfer (``flock(LOCK_EX)``, as vsftpd's
``lock_upload_files``), taken before a STOR truncates it: another session,
in any process, that would write, delete, rename or replace it meanwhile is
refused (``FileBusy``, 450) and changes nothing. Such commands hold the file
the same way (``guard``) while they measure and remove it, so that two of
them on two processes cannot both count it.
"""

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import os
import secrets
import stat

TEMP_PREFIX = ".ftpupload-"
# Room for the prefix and the token within NAME_MAX (255).
_NAME_ROOM = 200


def is_temporary(name):
    """True for the name of an atomic upload's temporary file."""
    return name.startswith(TEMP_PREFIX)


class RestartError(ValueError):
    """A REST offset beyond the end of the file being resumed."""


class FileBusy(BlockingIOError):
    """Another session holds the file: an upload writes it in place."""

    def __init__(self, path):
        super().__init__(errno.EWOULDBLOCK, "another session is uploading it", path)


# Opens and locks a file again when it was replaced between the two.
_LOCK_TRIES = 5
_PROBE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _lock(fd):
    """Lock ``fd`` (LOCK_EX) without waiting: True, False when held, None unsupported."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None  # no flock on this filesystem (ENOLCK...): unlocked, as before
    return True


def _at(fd, path, follow):
    """True when ``fd`` is the file at ``path`` (still)."""
    st = os.fstat(fd)
    try:
        at = os.stat(path) if follow else os.lstat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (at.st_dev, at.st_ino)


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
try:
    _renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
except (AttributeError, OSError):
    _renameat2 = None


def rename_new(src, dst):
    """Rename ``src`` to ``dst`` unless something is there (RENAME_NOREPLACE).

    Raise FileExistsError when ``dst`` exists; return False, having done
    nothing, where the system cannot (the caller renames as before). A
    command that measured nothing at ``dst`` renames so: a file created
    there meanwhile is measured (and held) before it is replaced.
    """
    if _renameat2 is None:
        return False
    if _renameat2(
        _AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE
    ):
        code = ctypes.get_errno()
        if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            return False
        raise OSError(code, os.strerror(code), src, None, dst)
    return True


@contextlib.contextmanager
def guard(path):
    """Hold the regular file at ``path`` while a command removes or replaces it.

    Yield the (device, inode) of the file held, or of a regular file that
    cannot be opened (not held); None when nothing regular is there. A
    command must act on that file only: one that appears at ``path``
    meanwhile is not held (see hold()). Raise FileBusy when an upload in
    place (or, for a moment, another such command) holds it, or when it is
    replaced at every try.
    """
    fd = seen = None
    for _ in range(_LOCK_TRIES):
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                break
            seen = (st.st_dev, st.st_ino)
            fd = os.open(path, _PROBE)
        except OSError:
            break
        locked = _lock(fd)
        if locked is False:
            os.close(fd)
            raise FileBusy(path)
        st = os.fstat(fd)
        seen = (st.st_dev, st.st_ino)
        if locked is None or _at(fd, path, follow=False):
            break
        os.close(fd)  # replaced meanwhile: hold the file there now
        fd = seen = None
    else:
        raise FileBusy(path)
    try:
        yield seen
    finally:
        if fd is not None:
            os.close(fd)


# What an action under hold() returns when a file appeared at the path
# meanwhile: it is held, measured and acted on again.
AGAIN = object()


def hold(path, action):
    """Return ``action(seen)`` run under ``guard(path)``, again while it returns AGAIN.

    ``seen`` is what the guard yields. Raise FileBusy when the file stays
    held, or keeps being replaced, for ``_LOCK_TRIES`` tries.
    """
    for _ in range(_LOCK_TRIES):
        with guard(path) as seen:
            result = action(seen)
        if result is not AGAIN:
            return result
    raise FileBusy(path)


def is_regular(path):
    """True when ``path`` is a regular file (not followed if a link)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def identity(st):
    """The identity of a file's content: device, inode, size, modification time."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class Upload:
    """A file being received on a data connection.

    ``prepare()`` decides how it is written (it raises for a REST beyond the
    end or a directory), ``journal_fields()`` says it for the journal, then
    ``open()`` creates the file.
    """

    # The upload's quotas.UploadQuota (None: no quota, no size limit).
    quota = None
    # Lock a file written in place while it is written (under a quota).
    lock = False

    def __init__(self, path, *, offset=0, append=False, atomic=True, digest=True):
        self.name = path  # what pyftpdlib's callbacks report
        self.offset = offset
        self.append = append
        self.atomic = atomic
        self.bytes_written = 0
        self.closed = False
        self.temp = None
        self.identity = None  # of the content written, once closed
        self.committed = False
        self.roll_back = False  # set when a quota or the size limit cut it short
        self.existed = False  # a regular file was there before
        self.size_before = 0
        self.lost_files = 0  # see _open_locked()
        self._replaced = (0, 0)  # (bytes, files) an atomic upload replaced
        self._written = None  # (device, inode, size) of the file written, closed
        # Written in place, it was deleted, renamed or replaced meanwhile.
        self._moved = False
        # Written in place under a quota: the file's os.stat_result once it
        # was written (and rolled back), and whether the roll-back removed it.
        self.final_stat = None
        self.unlinked = False
        self._target = path
        self._mode = None
        self._file = None
        self._digest = digest

    def prepare(self):
        """Decide where and how to write; raise OSError or RestartError."""
        try:
            st = os.stat(self.name)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), self.name)
        size = st.st_size if st is not None else 0
        self.existed = st is not None and stat.S_ISREG(st.st_mode)
        self.size_before = size if self.existed else 0
        if self.offset > size:
            raise RestartError(f"REST position ({self.offset}) > file size ({size})")
        if self.append and st is not None:
            # What is there is kept: the upload is what comes after it.
            self.offset = size
        resumed = bool(self.offset)
        # A digest of the whole file is known only when it is written from
        # its first byte.
        self._hash = hashlib.sha256() if self._digest and not resumed else None
        if resumed or not self.atomic:
            self.atomic = False
            return self
        if st is not None:
            self._mode = stat.S_IMODE(st.st_mode)
            if os.path.islink(self.name):
                # Replace the file the link points to, not the link.
                self._target = os.path.realpath(self.name)
        directory, name = os.path.split(self._target)
        self.temp = os.path.join(
            directory, f"{TEMP_PREFIX}{secrets.token_hex(4)}-{name[:_NAME_ROOM]}"
        )
        return self

    @classmethod
    def adopt(cls, file, name, digest=True, lock=False):
        """Wrap a file created and opened elsewhere (STOU's) as a direct upload."""
        upload = cls(name, atomic=False, digest=digest)
        upload._hash = hashlib.sha256() if digest else None
        upload._file = file
        if lock:
            # A new file of its own (O_EXCL): nobody else can hold it yet.
            upload.lock = True
            _lock(file.fileno())
        return upload

    def journal_fields(self):
        """What recovery needs to record and clean up this upload after a crash."""
        return {"_final": self._target, "_temp": self.temp, "_offset": self.offset}

    def open(self):
        """Create or open the file (in its temporary place when atomic)."""
        if self.atomic:
            self._file = open(self.temp, "xb", buffering=0)  # noqa: SIM115
            if self._mode is not None:
                os.fchmod(self._file.fileno(), self._mode)
        elif self.lock:
            self._open_locked()
        elif self.append:
            self._file = open(self.name, "ab", buffering=0)  # noqa: SIM115
        elif self.offset:
            self._file = open(self.name, "r+b", buffering=0)  # noqa: SIM115
            self._file.seek(self.offset)
        else:
            self._file = open(self.name, "wb", buffering=0)  # noqa: SIM115
        # Unbuffered: a write error surfaces at the write that failed, and
        # bytes_written is what the kernel took.
        return self

    def _open_locked(self):
        """Open the file in place and lock it, then (STOR) truncate it.

        The same flags as open()'s "ab", "r+b", "wb", without O_TRUNC: a
        file another session writes is left as it is (FileBusy). Whether it
        existed, and its size before, are what the lock found: another
        process may have changed it since prepare(). A file is created only
        with O_EXCL, so that it is known to be new (counted by this upload).
        """
        create = not self.offset or self.append
        if self.append:
            flags, mode = os.O_WRONLY | os.O_APPEND, "ab"
        elif self.offset:
            flags, mode = os.O_RDWR, "r+b"
        else:
            flags, mode = os.O_WRONLY, "wb"
        flags |= os.O_CLOEXEC
        # New files this upload created that another session took before
        # they were locked: that one counted them (a DELE freed one, an
        # upload wrote into it), so the usage counts them (quotas.py).
        self.lost_files = 0
        for _ in range(_LOCK_TRIES):
            created = False
            try:
                fd = os.open(self.name, flags)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    fd = os.open(self.name, flags | os.O_CREAT | os.O_EXCL, 0o666)
                except FileExistsError:
                    if not os.path.islink(self.name):
                        continue  # created meanwhile: open that one
                    # A dangling link: its target is created, as open() does.
                    fd = os.open(self.name, flags | os.O_CREAT, 0o666)
                created = True
            try:
                locked = _lock(fd)
                if locked is None or (locked and _at(fd, self.name, follow=True)):
                    break
                self.lost_files += created
                if locked is False:
                    raise FileBusy(self.name)
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # deleted or replaced before it was locked: again
        else:
            raise FileBusy(self.name)
        try:
            st = os.fstat(fd)
            # As it is now: an upload of another process may have ended (and
            # its change counted), a DELE removed it, since prepare(). A file
            # created here is this upload's to count; what another session
            # wrote into it before it was locked, that one counted.
            self.existed = not created
            self.size_before = st.st_size
            if self.append:
                self.offset = st.st_size
            if mode == "wb" and st.st_size:
                os.ftruncate(fd, 0)
            self._file = open(fd, mode, buffering=0)  # noqa: SIM115
        except BaseException:
            os.close(fd)
            raise
        if self.offset and not self.append:
            self._file.seek(self.offset)

    def write(self, data):
        if self._hash is not None:
            self._hash.update(data)
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            self.bytes_written += written
            view = view[written:]
        return len(data)

    @property
    def sha256(self):
        """The hex digest of the whole file, or "" when not computed."""
        return self._hash.hexdigest() if self._hash is not None else ""

    def commit(self):
        """Close the file, then put it in place. May raise OSError."""
        if self.closed:
            return
        self.closed = True
        try:
            self._file.flush()  # STOU's file (adopted) is buffered
            st = os.fstat(self._file.fileno())
            self.identity = identity(st)
            self._written = self.identity[:3]
            self.final_stat = st
            self._moved = self.quota is not None and not self._at_path()
            self._file.close()
            if self.atomic:
                if self.quota is not None:
                    # Not over a file written in place (FileBusy), and the
                    # file replaced is held while it is measured.
                    replaced = hold(self._target, self._replace_measured)
                    if replaced is not None:
                        self.quota.session.replaced(replaced)
                else:
                    os.replace(self.temp, self._target)
            self.committed = True
        except BaseException as exc:
            self._discard()
            # A replace refused (450) is the transfer's reply, not an error.
            if not (isinstance(exc, FileBusy) and self.quota.busy(self)):
                raise
        finally:
            if self.quota is not None:
                self.quota.finished(self)

    def _replace_measured(self, seen):
        """Put the file in place (under hold()); return what it replaced, measured.

        AGAIN: a file appeared meanwhile (to be measured, then replaced).
        """
        replaced = self.quota.session.measure(self._target, seen=seen)
        if replaced is AGAIN:
            return AGAIN
        self._replaced = replaced[:2] if replaced else (0, 0)
        if replaced is None:
            try:
                if rename_new(self.temp, self._target):
                    return None
            except FileExistsError:
                if is_regular(self._target):
                    return AGAIN  # not measured: measured and held first
            # No renameat2 here, or a link or such: replaced as before.
        os.replace(self.temp, self._target)
        return replaced

    def abort(self):
        """Close the file; a fresh atomic upload is removed."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.quota is not None and not self.atomic:
                try:
                    self._file.flush()  # STOU's file (adopted) is buffered
                except OSError:
                    pass
                fd = self._file.fileno()
                self._written = identity(os.fstat(fd))[:3]
                self._moved = not self._at_path()
                if self.roll_back:
                    self._roll_back()
                # After the roll-back: what the quota settles by.
                self.final_stat = os.fstat(fd)
            self._file.close()
        finally:
            try:
                self._discard()
            finally:
                if self.quota is not None:
                    self.quota.finished(self)

    def close(self):
        # pyftpdlib closes the files of transfers that never started.
        self.abort()

    def _roll_back(self):
        """Remove what a direct upload wrote, its file still open."""
        if self._moved:
            return  # deleted, renamed or replaced meanwhile: not ours to touch
        if self.existed and (self.offset or self.append):
            # Appended or resumed: the file as it was before, in length.
            fd = self._file.fileno()
            if os.fstat(fd).st_size > self.size_before:
                os.ftruncate(fd, self.size_before)
        else:
            try:
                os.unlink(self.name)
                self.unlinked = True
            except FileNotFoundError:
                pass

    def size_change(self):
        """Return ``(bytes, files)`` this upload added to the home, once closed.

        Measured, not assumed: an atomic upload adds its size less the file it
        replaced; an append adds what it wrote (concurrent appends each count
        theirs); anything else written in place is the file's size now less
        its size before. (A file written in place under a quota is measured
        by the quota, which follows it: this is for one it could not.)
        """
        if self.atomic:
            if not self.committed:
                return 0, 0
            old_bytes, old_files = self._replaced
            return self.identity[2] - old_bytes, 1 - old_files
        if self.append and self.existed and not self.roll_back:
            return self.bytes_written, 0
        if self._moved:
            # Another session deleted, renamed or replaced the file while it
            # was written: that command counted the file as it was then, so
            # the file measured at its path (nothing, or another file) would
            # free it a second time. What the upload made of it is counted;
            # a delete meanwhile leaves at most the bytes written after it
            # counted in excess (ftpquotascan returns them), never too few.
            return self._written[2] - self.size_before, 1 - int(self.existed)
        now_bytes, now_files = regular_size(self.name, follow=True)
        return now_bytes - self.size_before, now_files - int(self.existed)

    def _at_path(self):
        """True when the file written is (still) the one at its path."""
        if self.atomic:
            return True
        try:
            st = os.stat(self.name)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._written[:2]

    def _discard(self):
        if not self.atomic:
            return
        try:
            os.unlink(self.temp)
        except FileNotFoundError:
            pass


def regular_size(path, follow=False):
    """Return ``(size, 1)`` for a regular file at ``path``, else ``(0, 0)``."""
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return 0, 0
    if not stat.S_ISREG(st.st_mode):
        return 0, 0
    return st.st_size, 1
