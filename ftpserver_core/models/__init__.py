"""The FTP server's models: accounts and homes, the audit trail, the defender, shared state.

Migrations and other apps import from here; each concept has its module.
"""

from .accounts import (
    PERMISSION_HELP,
    PERMISSION_LETTERS,
    AccessLimits,
    DirectoryRule,
    FTPUserAccount,
    FTPUserGroup,
    HomeDirectory,
    parse_networks,
    validate_networks,
    validate_path_template,
    validate_permission,
    validate_rule_path,
)
from .audit import AuditEvent
from .defender import Ban, NetworkRule, normalize_network, validate_network
from .state import LiveSession, QuotaLease, QuotaUsage, ServerProcess

__all__ = [
    "PERMISSION_HELP",
    "PERMISSION_LETTERS",
    "AccessLimits",
    "AuditEvent",
    "Ban",
    "DirectoryRule",
    "FTPUserAccount",
    "FTPUserGroup",
    "HomeDirectory",
    "LiveSession",
    "NetworkRule",
    "QuotaLease",
    "QuotaUsage",
    "ServerProcess",
    "normalize_network",
    "parse_networks",
    "validate_networks",
    "validate_path_template",
    "validate_permission",
    "validate_rule_path",
    "validate_network",
]
