"""Files being received: counted, hashed, and put in place only when whole.

In ``atomic`` mode (``FTPSERVER_UPLOAD_MODE``) an upload is written to a
hidden temporary file next to its target, ``.ftpupload-<token>-<name>``, and
renamed to the target once the data connection ended cleanly and every byte
was written: a program watching the directory never sees a partial file. A
resumed upload (REST+STOR, APPE) moves the existing file to the temporary
name for the time of the transfer and back at its end, whatever the outcome,
so the client can resume again. An upload that fails from the start is
removed. ``direct`` mode writes in place, as classic FTP servers do.

The temporary file's name is journaled before it is created (see
``audit/journal.py``), so a crash leaves nothing behind that the next start
does not find and remove.
"""

import errno
import hashlib
import os
import secrets

TEMP_PREFIX = ".ftpupload-"
# Room for the prefix and the token within NAME_MAX (255).
_NAME_ROOM = 200


def is_temporary(name):
    """True for the name of an atomic upload's temporary file."""
    return name.startswith(TEMP_PREFIX)


class RestartError(ValueError):
    """A REST offset beyond the end of the file being resumed."""


class Upload:
    """A file being received on a data connection."""

    def __init__(self, path, *, offset=0, append=False, atomic=True, digest=True):
        self.name = path  # what pyftpdlib's callbacks report
        self.offset = offset
        self.append = append
        self.atomic = atomic
        self.bytes_written = 0
        self.closed = False
        self.committed = False
        self.temp = None
        self._resume = False
        self._file = None
        if atomic:
            directory, name = os.path.split(path)
            self.temp = os.path.join(
                directory, f"{TEMP_PREFIX}{secrets.token_hex(4)}-{name[:_NAME_ROOM]}"
            )
        # A digest of the whole file is known only when it is written from
        # its first byte.
        self._hash = hashlib.sha256() if digest else None

    def journal_fields(self):
        """What recovery needs to record and clean up this upload after a crash."""
        return {
            "_final": self.name,
            "_temp": self.temp,
            "_offset": self.offset,
            "_resume": bool(self.offset or self.append),
        }

    def open(self):
        """Create or open the file (in its temporary place when atomic)."""
        if os.path.isdir(self.name):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), self.name)
        exists = os.path.lexists(self.name)
        resume = bool(self.offset or self.append) and exists
        if self.offset and not exists:
            raise RestartError(f"REST position ({self.offset}) > file size (0)")
        if resume and self.offset:
            size = os.path.getsize(self.name)
            if self.offset > size:
                raise RestartError(
                    f"REST position ({self.offset}) > file size ({size})"
                )
        if resume or self.offset:
            self._hash = None
        target = self.name
        if self.atomic:
            target = self.temp
            if resume:
                os.rename(self.name, self.temp)
                self._resume = True
        try:
            if self.offset:
                mode = "r+b"
            elif resume:
                mode = "ab"
            else:
                mode = "xb" if self.atomic else "wb"
            # Unbuffered: a write error surfaces at the write that failed,
            # and bytes_written is what the kernel took.
            self._file = open(target, mode, buffering=0)  # noqa: SIM115
            if self.offset:
                self._file.seek(self.offset)
        except BaseException:
            if self._resume:
                os.rename(self.temp, self.name)
            raise
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
        """Flush and close the file, then put it in place. May raise OSError."""
        if self.closed:
            return
        self.closed = True
        try:
            self._file.close()
        except BaseException:
            self._discard()
            raise
        if self.atomic:
            try:
                os.replace(self.temp, self.name)
            except BaseException:
                self._discard()
                raise
        self.committed = True

    def abort(self):
        """Close the file without putting a fresh upload in place."""
        if self.closed:
            return
        self.closed = True
        error = None
        try:
            self._file.close()
        except OSError as exc:
            error = exc
        self._discard()
        if error is not None:
            raise error

    def close(self):
        # pyftpdlib closes the files of transfers that never started.
        self.abort()

    def _discard(self):
        if not self.atomic:
            return
        try:
            if self._resume:
                # The client resumes from what is there: put it back.
                os.replace(self.temp, self.name)
            else:
                os.unlink(self.temp)
        except FileNotFoundError:
            pass
