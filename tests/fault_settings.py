"""tests.settings plus every FTPSERVER_* environment variable (for the server
processes of tests/test_faults.py).

A variable of a setting in ftpserver_core.conf.DEFAULTS gets that setting's
type, as in ftpadmin.settings; any other one (a setting newer than DEFAULTS)
is read as None ("none" or empty), a bool ("true"/"false"), an int, a float
or else the string itself.
"""

import os

from tests.settings import *  # noqa: F403

try:
    from ftpserver_core.conf import DEFAULTS as _DEFAULTS
except ImportError:  # pragma: no cover - the app being rewritten
    _DEFAULTS = {}

_PREFIX = "FTPSERVER_"
_MISSING = object()


def _guess(value):
    text = value.strip()
    if text.lower() in ("", "none", "null"):
        return None
    if text.lower() in ("true", "false", "yes", "no", "on", "off"):
        return text.lower() in ("true", "yes", "on")
    for parse in (lambda v: int(v, 0), float):
        try:
            return parse(text)
        except ValueError:
            pass
    return value


def _typed(default, value):
    if default is _MISSING:
        return _guess(value)
    if isinstance(default, bool):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int | float) or default is None:
        guessed = _guess(value)
        if isinstance(default, float) and isinstance(guessed, int):
            return float(guessed)
        return guessed
    return value


for _key, _value in os.environ.items():
    if _key.startswith(_PREFIX) and _key != "FTPSERVER_LOG_LEVEL":
        _name = _key[len(_PREFIX) :]
        globals()[_key] = _typed(_DEFAULTS.get(_name, _MISSING), _value)
