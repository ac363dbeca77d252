"""Admin pages: FTP home directories, groups, accounts, the audit trail, the
defender, the live sessions."""

from .accounts import (  # noqa: F401
    DirectoryRuleInline,
    FTPUserAccountAdmin,
    FTPUserGroupAdmin,
    HomeDirectoryAdmin,
)
from .audit import AuditEventAdmin  # noqa: F401
from .defender import BanAdmin, NetworkRuleAdmin  # noqa: F401
from .sessions import LiveSessionAdmin  # noqa: F401
from .users import FTPAccountInline  # noqa: F401
