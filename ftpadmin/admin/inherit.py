"""Inheritable yes/no fields in the lists: their filter and their column.

A blank ``require_tls`` is no "Unknown": on an account it follows the group,
on a group it leaves the choice to the server. The lists call it so, as the
forms do (``ftpadmin.forms.INHERIT_LABELS``).
"""

from django.contrib import admin
from django.utils.translation import gettext

from ftpadmin.forms import INHERIT_LABELS


class InheritBooleanFilter(admin.BooleanFieldListFilter):
    """Django's yes/no filter, its "Unknown" named after what None means."""

    null_label = None

    def choices(self, changelist):
        null_query = f"{self.lookup_kwarg2}=True"
        unknown = str(dict(self.field.flatchoices).get(None, gettext("Unknown")))
        for choice in super().choices(changelist):
            if null_query in choice["query_string"]:
                # Keep the facet count Django may append: "Unknown (3)".
                choice = {
                    **choice,
                    "display": str(self.null_label)
                    + str(choice["display"]).removeprefix(unknown),
                }
            yield choice


class AccountInheritFilter(InheritBooleanFilter):
    null_label = INHERIT_LABELS["account"]


class GroupInheritFilter(InheritBooleanFilter):
    null_label = INHERIT_LABELS["group"]


def inherit_display(value, kind):
    """The text of an inheritable yes/no in a list: Yes, No, or what None means."""
    if value is None:
        return str(INHERIT_LABELS[kind])
    return gettext("Yes") if value else gettext("No")
