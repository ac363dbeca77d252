"""Benchmark settings: the test settings with Django's default password hasher."""

from tests.settings import *  # noqa: F403

del PASSWORD_HASHERS  # noqa: F821  (Django's default: PBKDF2, as in production)
FTPSERVER_AUTH_FAILED_DELAY = 3.0
