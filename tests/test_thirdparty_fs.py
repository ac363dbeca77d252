"""PyFilesystem2's own test suite (``fs.test.FSTestCases``) against the server.

Every test case of FSTestCases runs twice through ``fs.ftpfs.FTPFS``: over
plain FTP (``TestFTPFS``) and over FTPS, explicit TLS with PROT P on the data
channel (``TestFTPSFS``). Each test gets its own live server and a fresh
account with full permission, so the cases share no state.

FSTestCases is unittest-style: the classes are ``unittest.TestCase``s and an
autouse pytest fixture method starts the server (with pytest-django's
transactional database) before unittest's ``setUp`` calls ``make_fs()``.
"""

import unittest

import pytest
from fs.ftpfs import FTPFS
from fs.test import FSTestCases

from tests.certs import make_certificate
from tests.conftest import PASSWORD

# FSTestCases that cannot apply to an FTP server, each with its reason; they
# are skipped one by one, never as a group. None so far: every case runs.
# (test_case_sensitive reports a skip of FSTestCases' own: FTPFS's meta does
# not say whether paths are case sensitive.)
NOT_APPLICABLE = {}


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory):
    return make_certificate(tmp_path_factory.mktemp("tls"))


class _ServerFSTestCases(FSTestCases):
    """FSTestCases with ``make_fs()`` returning an FTPFS on a live server."""

    tls = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name, reason in NOT_APPLICABLE.items():
            assert callable(getattr(FSTestCases, name, None)), name
            setattr(cls, name, unittest.skip(reason)(getattr(FSTestCases, name)))

    @pytest.fixture(autouse=True)
    def _live_server(self, ftp_server, make_account, tls_cert):
        self.account = make_account("alice", permission="elradfmwMT")
        if self.tls:
            # TLS required (the default TLS_REQUIRED=True): FTPFS logs in
            # after AUTH TLS and sends PROT P.
            self.live = ftp_server(certfile=tls_cert.certfile, keyfile=tls_cert.keyfile)
        else:
            self.live = ftp_server()

    def make_fs(self):
        return FTPFS(
            self.live.host,
            user="alice",
            passwd=PASSWORD,
            port=self.live.port,
            timeout=10,
            tls=self.tls,
        )


class TestFTPFS(_ServerFSTestCases, unittest.TestCase):
    tls = False


class TestFTPSFS(_ServerFSTestCases, unittest.TestCase):
    tls = True

    def test_data_channel_is_tls(self):
        """Not part of FSTestCases: FTPFS really uses TLS on both channels."""
        # A file to list: an empty listing may end before the TLS handshake
        # of its data connection does (see tests/test_tls.py).
        self.fs.writebytes("listed.txt", b"listed")
        ftp = self.fs.ftp
        assert ftp.sock.version() in ("TLSv1.2", "TLSv1.3")
        conn = ftp.transfercmd("NLST")
        try:
            assert conn.version() in ("TLSv1.2", "TLSv1.3")
            assert conn.makefile("rb").read().split() == [b"listed.txt"]
        finally:
            conn.unwrap().close()
        ftp.voidresp()
