"""What the FTP account commands share: validation with clear errors."""

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from ftpserver_core.models import (
    HomeDirectory,
    validate_path_template,
    validate_permission,
)


def clean_permission(value):
    """Return ``value`` if it is valid permission letters, else raise CommandError."""
    try:
        validate_permission(value)
    except ValidationError as exc:
        raise CommandError(f"--permission: {' '.join(exc.messages)}") from None
    return value


def home_directory(path):
    """Return the HomeDirectory for the template ``path``, creating it if new."""
    if not path:
        return None
    try:
        validate_path_template(path)
    except ValidationError as exc:
        raise CommandError(f"HOME_DIR: {' '.join(exc.messages)}") from None
    home, _ = HomeDirectory.objects.get_or_create(path=path)
    return home
