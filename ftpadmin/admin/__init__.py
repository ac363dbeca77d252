"""Admin pages: FTP home directories, groups, accounts, the audit trail, the defender."""

from .accounts import (  # noqa: F401
    DirectoryRuleInline,
    FTPUserAccountAdmin,
    FTPUserGroupAdmin,
    HomeDirectoryAdmin,
)
from .audit import AuditEventAdmin  # noqa: F401
from .defender import BanAdmin, NetworkRuleAdmin  # noqa: F401
from .users import FTPAccountInline  # noqa: F401
