#!/bin/sh
# Entrypoint of the image: "ftpserver" and "web" migrate the database first
# (unless FTPADMIN_MIGRATE=0: compose migrates once, in its own service),
# then become that ftpadmin command, so that it gets the signals as PID 1.
# Other ftpadmin commands run as given (docker compose run admin
# createsuperuser), and so does any program (sh, python).
set -eu

if [ "$#" -eq 0 ]; then
    set -- ftpserver
fi

case "$1" in
ftpserver | web)
    if [ "${FTPADMIN_MIGRATE:-1}" != 0 ]; then
        ftpadmin migrate --noinput
    fi
    exec ftpadmin "$@"
    ;;
esac

if command -v "$1" >/dev/null 2>&1; then
    exec "$@"
fi
exec ftpadmin "$@"
