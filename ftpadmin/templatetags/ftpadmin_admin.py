"""Template tags of the audit admin pages."""

from django import template
from django.contrib.admin.templatetags.base import InclusionAdminNode

from ftpadmin.date_hierarchy import date_hierarchy_context

register = template.Library()


@register.tag(name="seek_date_hierarchy")
def seek_date_hierarchy_tag(parser, token):
    """Django's ``date_hierarchy`` tag, with the buckets found by index seeks."""
    return InclusionAdminNode(
        parser,
        token,
        func=date_hierarchy_context,
        template_name="date_hierarchy.html",
        takes_context=False,
    )
