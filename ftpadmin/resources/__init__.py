"""django-import-export resources: the audit trail (export) and the FTP accounts."""

from .accounts import FTPUserAccountResource
from .audit import AuditEventResource
from .widgets import IsoDateTimeWidget

__all__ = ["AuditEventResource", "FTPUserAccountResource", "IsoDateTimeWidget"]
