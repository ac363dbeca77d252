"""Bare pyftpdlib (DummyAuthorizer) with the same users, the benchmarks' ceiling.

usage: python -m tests.benchmarks.bare_server PORT ROOT N_USERS
       [--workers N] [--certfile PEM --keyfile PEM]

Logging stays at WARNING: pyftpdlib would otherwise log every command at
INFO, which our server does not do either.

``--workers N`` (N > 1): a prefork of N bare servers accepting on one
listening socket, as ours with ``--workers N`` (the parent binds, then
forks; each child builds its own IO loop and server). pyftpdlib's own
``MultiprocessFTPServer`` is not that: it forks a process per connection.

``--certfile``: pyftpdlib's ``TLS_FTPHandler`` (pyOpenSSL, as ours), TLS
required on the control and the data connections as our default
``FTPSERVER_TLS_REQUIRED`` does.
"""

import argparse
import logging
import os
import signal
import socket
import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
from pyftpdlib.servers import FTPServer

from .launch import MAX_CONNECTIONS, raise_fd_limit


def handler_class(root, n_users, certfile=None, keyfile=None):
    authorizer = DummyAuthorizer()
    for name in ["probe"] + [f"u{i}" for i in range(n_users)]:
        home = os.path.join(root, name)
        os.makedirs(home, exist_ok=True)
        authorizer.add_user(name, "pw-" + name, home, perm="elradfmwMT")
    if certfile is None:
        return type("BareHandler", (FTPHandler,), {"authorizer": authorizer})
    return type(
        "BareTLSHandler",
        (TLS_FTPHandler,),
        {
            "authorizer": authorizer,
            "certfile": certfile,
            "keyfile": keyfile,
            "tls_control_required": True,
            "tls_data_required": True,
        },
    )


def serve(address_or_socket, handler):
    server = FTPServer(address_or_socket, handler)
    server.max_cons = MAX_CONNECTIONS
    server.serve_forever()


def prefork(port, handler, workers):
    """Bind, fork ``workers`` servers on the socket, stop them on SIGTERM."""
    sock = socket.create_server(("127.0.0.1", port), backlog=1024)
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            serve(sock, handler)
            os._exit(0)
        children.append(pid)
    sock.close()

    def stop(signum, frame):
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    print("READY", flush=True)
    # A child that dies takes the whole server down: a result from one worker
    # would not be the figure asked for.
    os.wait()
    stop(None, None)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("root")
    parser.add_argument("n_users", type=int)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    args = parser.parse_args()
    raise_fd_limit()
    logging.basicConfig(level=logging.WARNING)
    handler = handler_class(args.root, args.n_users, args.certfile, args.keyfile)
    if args.workers > 1:
        prefork(args.port, handler, args.workers)
        return
    print("READY", flush=True)
    serve(("127.0.0.1", args.port), handler)


if __name__ == "__main__":
    main()
