"""An FTP/FTPS server whose accounts and permissions live in Django."""

__version__ = "0.1.0"
