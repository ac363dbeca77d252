"""Bare pyftpdlib (DummyAuthorizer) with the same users, the benchmarks' ceiling.

usage: python -m tests.benchmarks.bare_server PORT ROOT N_USERS

Logging stays at WARNING: pyftpdlib would otherwise log every command at
INFO, which our server does not do either.
"""

import logging
import os
import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

from .launch import MAX_CONNECTIONS, raise_fd_limit


def main():
    port, root, n_users = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    raise_fd_limit()
    logging.basicConfig(level=logging.WARNING)
    authorizer = DummyAuthorizer()
    for name in ["probe"] + [f"u{i}" for i in range(n_users)]:
        home = os.path.join(root, name)
        os.makedirs(home, exist_ok=True)
        authorizer.add_user(name, "pw-" + name, home, perm="elradfmwMT")
    handler = type("BareHandler", (FTPHandler,), {"authorizer": authorizer})
    server = FTPServer(("127.0.0.1", port), handler)
    server.max_cons = MAX_CONNECTIONS
    print("READY", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
