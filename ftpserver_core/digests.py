"""File digests: the HASH command (draft-bryan-ftpext-hash) and its cache.

Uploads (and downloads whose bytes pass through the server) are hashed with
SHA-256 as they stream; the digest goes into the audit record and into a
small per-process cache keyed by the file's identity (device, inode, size,
modification time), so a HASH right after an upload costs no read. Other
files and algorithms are read and hashed in a worker thread.
"""

import collections
import hashlib
import os
import threading
import zlib

from .uploads import identity

DEFAULT = "SHA-256"
ALGORITHMS = ("SHA-256", "SHA-1", "MD5", "CRC32")
FEATURE = "HASH " + ";".join(a + ("*" if a == DEFAULT else "") for a in ALGORITHMS)

_CACHE_SIZE = 4096
_cache = collections.OrderedDict()
_lock = threading.Lock()


def normalize(name):
    """Return the canonical name of an algorithm, or None if unsupported."""
    wanted = name.strip().upper().replace("_", "-")
    aliases = {"SHA256": "SHA-256", "SHA1": "SHA-1"}
    wanted = aliases.get(wanted, wanted)
    return wanted if wanted in ALGORITHMS else None


class _Crc32:
    def __init__(self):
        self.value = 0

    def update(self, data):
        self.value = zlib.crc32(data, self.value)

    def hexdigest(self):
        return f"{self.value:08x}"


def _new(algorithm):
    if algorithm == "CRC32":
        return _Crc32()
    return hashlib.new(algorithm.replace("-", "").lower(), usedforsecurity=False)


def _identity(path):
    st = os.stat(path)
    return identity(st), st.st_size


def remember(content, sha256):
    """Keep the SHA-256 of a file's content, identified by :func:`identity`
    of the descriptor it was read or written through (not by its path, which
    may name another file by now)."""
    with _lock:
        _cache[content] = sha256
        _cache.move_to_end(content)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)


def known(path, algorithm):
    """Return (size, digest) if the cache knows the file as it is, else None."""
    if algorithm != DEFAULT:
        return None
    try:
        identity, size = _identity(path)
    except OSError:
        return None
    with _lock:
        digest = _cache.get(identity)
    return None if digest is None else (size, digest)


def of_file(fileobj):
    """Return the content identity of an open file, or None."""
    try:
        return identity(os.fstat(fileobj.fileno()))
    except (OSError, ValueError, AttributeError):
        return None


def compute(path, algorithm=DEFAULT):
    """Read ``path`` and return (size, hex digest), or the OSError (never raises)."""
    digest = _new(algorithm)
    size = 0
    try:
        with open(path, "rb") as fh:
            before = of_file(fh)
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
            # Only a file that did not change while it was read.
            unchanged = before is not None and of_file(fh) == before
    except OSError as exc:
        return exc
    if algorithm == DEFAULT and unchanged:
        remember(before, digest.hexdigest())
    return size, digest.hexdigest()
