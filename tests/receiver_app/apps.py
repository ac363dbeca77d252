from django.apps import AppConfig


class ReceiverAppConfig(AppConfig):
    """Connects the receivers of :mod:`tests.receiver_app.receivers` at startup.

    Listed before ``ftpserver_core`` in INSTALLED_APPS, so its receivers run
    before the built-in audit receivers of the same signals.
    """

    name = "tests.receiver_app"
    label = "receiver_app"

    def ready(self):
        from ftpserver_core import signals
        from ftpserver_core.handlers import DjangoFTPHandler

        from . import receivers

        for name in receivers.WATCHED:
            signal = signals.ALL_SIGNALS[name]
            # The failing one first: the others must run after it raised.
            signal.connect(
                receivers.failing, dispatch_uid=f"receiver_app.failing.{name}"
            )
            signal.connect(
                receivers.recording, dispatch_uid=f"receiver_app.recording.{name}"
            )
        # Filtered on the configured handler class, as a project would.
        signals.ftp_login.connect(
            receivers.login_by_handler,
            sender=DjangoFTPHandler,
            dispatch_uid="receiver_app.login_by_handler",
        )
