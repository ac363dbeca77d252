"""The local filesystem a session sees, jailed in its home directory."""

import os

from pyftpdlib.filesystems import AbstractedFS, FilesystemError

from .uploads import is_temporary


def quoted(path):
    """Return ``path`` in double quotes for a reply, on one line.

    A quote in it is doubled, as RFC 959 quotes a path; a CR or LF (allowed
    in a name) is written as ``\\r``/``\\n``, or the client would read the
    rest of the reply as a reply of its own.
    """
    path = path.replace('"', '""').replace("\r", "\\r").replace("\n", "\\n")
    return f'"{path}"'


class OutsideHome(FilesystemError):
    """The path a client sent leads out of its home (through a link)."""

    def __init__(self, sent):
        super().__init__(f"{quoted(sent)} points outside the home directory")
        self.sent = sent


class DjangoFilesystem(AbstractedFS):
    """pyftpdlib's AbstractedFS with the jail checks it leaves to the caller."""

    # The path the client sent last, as (path on disk, path as sent).
    _sent = (None, None)

    def ftpnorm(self, ftppath):
        # A NUL byte would make os.* raise ValueError deep inside pyftpdlib.
        if "\x00" in ftppath:
            raise FilesystemError("Path contains a NUL byte")
        return super().ftpnorm(ftppath)

    def ftp2fs(self, ftppath):
        fspath = super().ftp2fs(ftppath)
        # pyftpdlib converts a command's path before anything else: replies
        # about it can then name it as the client did ("../x", not "/x").
        self._sent = (fspath, ftppath)
        return fspath

    def sent_path(self, fspath):
        """Return ``fspath`` as the client named it in this command."""
        sent_fs, sent = self._sent
        return sent if fspath == sent_fs else self.client_path(fspath)

    def fs2ftp(self, fspath):
        ftppath = super().fs2ftp(fspath)
        # pyftpdlib names any path outside the home "/", and asks for that
        # name only to refuse the command that sent it: refused here instead,
        # naming the path as sent. The extra check runs for "/" alone.
        if ftppath == "/" and fspath == self._sent[0] and not self.validpath(fspath):
            raise OutsideHome(self._sent[1])
        return ftppath

    def readlink(self, path):
        """Return where the link ``path`` leads, as the client sees it.

        pyftpdlib's format_list() (LIST, STAT with a path) is the caller:
        it shows a link as "name -> target", and os.readlink()'s target would
        tell the client the server's real paths. A target outside the home is
        none of its business: FilesystemError, and format_list() shows the
        bare name. Only links pay for the two lookups.
        """
        target = os.path.realpath(path)
        root = os.path.realpath(self.root).rstrip(os.sep)
        if target == root:
            return "/"
        if target.startswith(root + os.sep):
            return target[len(root) :].replace(os.sep, "/")
        raise FilesystemError(f"{self.client_path(path)!r} leads outside the home")

    def mkstemp(self, suffix="", prefix="", dir=None, mode="wb"):
        # pyftpdlib's STOU checks neither the directory's real location nor
        # symlinks in it, so a link inside the home could lead outside.
        if dir is not None and not self.validpath(dir):
            raise FilesystemError("Directory is outside the home directory")
        return super().mkstemp(suffix=suffix, prefix=prefix, dir=dir, mode=mode)

    def listdir(self, path):
        # Uploads in progress (atomic mode) are nobody's business.
        return [name for name in super().listdir(path) if not is_temporary(name)]

    def client_path(self, fspath):
        """Return ``fspath`` as the client sees it, without touching the disk."""
        root = self.root.rstrip(os.sep)
        if fspath == root:
            return "/"
        if fspath.startswith(root + os.sep):
            return fspath[len(root) :].replace(os.sep, "/")
        return self.fs2ftp(fspath)
