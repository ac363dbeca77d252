"""Timers on a server's handler class (put first in its bases when metrics are on)."""

from time import perf_counter

from . import registry


class MetricsHandlerMixin:
    """Time each command on the loop, and each login from PASS to its verdict."""

    # verb -> its histogram's observe(), made once per verb (labels() is a
    # lookup under a lock: too slow for every command).
    _command_timers = {}
    metrics_pass_at = None
    metrics_verdict_at = None

    def pre_process_command(self, line, cmd, arg):
        started = perf_counter()
        try:
            super().pre_process_command(line, cmd, arg)
        finally:
            observe = self._command_timers.get(cmd)
            if observe is None:
                observe = _timer(cmd if cmd in self.proto_cmds else registry.OTHER)
                if cmd in self.proto_cmds:
                    self._command_timers[cmd] = observe
            observe(perf_counter() - started)

    def ftp_PASS(self, line):
        # Read by the login receivers (metrics/receivers.py).
        self.metrics_pass_at = perf_counter()
        self.metrics_verdict_at = None
        return super().ftp_PASS(line)

    def _login_done(self, outcome, attempt=None):
        # The verdict: a failed login's signal comes after the failed-login
        # delay, which is no part of the login's time.
        if self.metrics_verdict_at is None:
            self.metrics_verdict_at = perf_counter()
        return super()._login_done(outcome, attempt)


def _timer(label):
    return registry.COMMAND_SECONDS.labels(label).observe
