"""Files being received: counted, hashed, and put in place only when whole.

In ``atomic`` mode (``FTPSERVER_UPLOAD_MODE``) a fresh upload is written to a
hidden temporary file next to its target, ``.ftpupload-<token>-<name>``, and
renamed to the target once the data connection ended cleanly and every byte
was written: a program watching the directory never sees a partial file, and
an upload that fails leaves nothing. The temporary file takes the mode of the
file it replaces; a target that is a symbolic link is replaced where it
points. A resumed upload (REST+STOR into an existing file, APPE onto one)
writes in place, as in ``direct`` mode: that file was visible before, and
concurrent appends must all land.

The upload is journaled before its temporary file is created (see
``audit/journal.py``), so a crash leaves nothing behind that the next start
does not find and remove.
"""

import errno
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


def identity(st):
    """The identity of a file's content: device, inode, size, modification time."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class Upload:
    """A file being received on a data connection.

    ``prepare()`` decides how it is written (it raises for a REST beyond the
    end or a directory), ``journal_fields()`` says it for the journal, then
    ``open()`` creates the file.
    """

    def __init__(self, path, *, offset=0, append=False, atomic=True, digest=True):
        self.name = path  # what pyftpdlib's callbacks report
        self.offset = offset
        self.append = append
        self.atomic = atomic
        self.bytes_written = 0
        self.closed = False
        self.temp = None
        self.identity = None  # of the content written, once closed
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

    def journal_fields(self):
        """What recovery needs to record and clean up this upload after a crash."""
        return {"_final": self._target, "_temp": self.temp, "_offset": self.offset}

    def open(self):
        """Create or open the file (in its temporary place when atomic)."""
        if self.atomic:
            self._file = open(self.temp, "xb", buffering=0)  # noqa: SIM115
            if self._mode is not None:
                os.fchmod(self._file.fileno(), self._mode)
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
            self.identity = identity(os.fstat(self._file.fileno()))
            self._file.close()
            if self.atomic:
                os.replace(self.temp, self._target)
        except BaseException:
            self._discard()
            raise

    def abort(self):
        """Close the file; a fresh atomic upload is removed."""
        if self.closed:
            return
        self.closed = True
        try:
            self._file.close()
        finally:
            self._discard()

    def close(self):
        # pyftpdlib closes the files of transfers that never started.
        self.abort()

    def _discard(self):
        if not self.atomic:
            return
        try:
            os.unlink(self.temp)
        except FileNotFoundError:
            pass
