"""The dashboard of the admin index: ``{% ftpadmin_dashboard %}``."""

from django import template

from ftpadmin.dashboard import dashboard
from ftpadmin.views import VIEW_PERMISSION

register = template.Library()


@register.inclusion_tag("ftpadmin/dashboard.html", takes_context=True)
def ftpadmin_dashboard(context):
    """Render today's figures and the 30-day chart for those who may see them.

    Users without the permission to view the audit trail get nothing, and
    cost no query.
    """
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.has_perm(VIEW_PERMISSION):
        return {"dashboard": None}
    return {"dashboard": dashboard()}
