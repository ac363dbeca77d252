"""Admin pages: FTP home directories, groups, accounts and the audit trail."""

from .accounts import (  # noqa: F401
    DirectoryRuleInline,
    FTPUserAccountAdmin,
    FTPUserGroupAdmin,
    HomeDirectoryAdmin,
)
from .audit import AuditEventAdmin  # noqa: F401
from .users import FTPAccountInline  # noqa: F401
