"""The local filesystem a session sees, jailed in its home directory."""

import os

from pyftpdlib.filesystems import AbstractedFS, FilesystemError

from .uploads import is_temporary


class DjangoFilesystem(AbstractedFS):
    """pyftpdlib's AbstractedFS with the jail checks it leaves to the caller."""

    def ftpnorm(self, ftppath):
        # A NUL byte would make os.* raise ValueError deep inside pyftpdlib.
        if "\x00" in ftppath:
            raise FilesystemError("Path contains a NUL byte")
        return super().ftpnorm(ftppath)

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
