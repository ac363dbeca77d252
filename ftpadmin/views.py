"""The transfers report: a page in the admin's look, and its streaming exports.

Every view needs an admin login (staff) and the permission to view the
audit trail.
"""

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import permission_required
from django.http import HttpResponseBadRequest, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.views.decorators.cache import never_cache

from ftpadmin.exports import csv_lines, excel_csv_lines, xferlog_lines
from ftpadmin.filters import TransferFilterSet, transfers
from ftpadmin.paginators import KnownCountPaginator
from ftpadmin.totals import overall_totals, per_user_totals
from ftpserver_core.models import AuditEvent

VIEW_PERMISSION = "ftpserver_core.view_auditevent"
PER_PAGE = 100


def _filterset(request):
    return TransferFilterSet(request.GET or None, queryset=transfers())


def _invalid(filterset):
    return filterset.is_bound and not filterset.is_valid()


@never_cache
@staff_member_required
@permission_required(VIEW_PERMISSION, raise_exception=True)
def transfers_report(request):
    filterset = _filterset(request)
    queryset = filterset.qs.none() if _invalid(filterset) else filterset.qs
    per_user = per_user_totals(queryset)
    totals = overall_totals(per_user)
    # The totals counted the rows already: no second COUNT(*) for the pages.
    paginator = KnownCountPaginator(
        queryset.order_by("-time", "-id"), PER_PAGE, count=totals["files"]
    )
    page = paginator.get_page(request.GET.get("page"))
    context = {
        **admin.site.each_context(request),
        "title": _("Transfers"),
        "opts": AuditEvent._meta,
        "filter": filterset,
        "page_obj": page,
        "paginator": paginator,
        "page_range": paginator.get_elided_page_range(page.number),
        "per_user": per_user,
        "totals": totals,
    }
    return TemplateResponse(request, "ftpadmin/transfers.html", context)


def _stream(request, lines, content_type, extension):
    filterset = _filterset(request)
    if _invalid(filterset):
        return HttpResponseBadRequest(
            filterset.errors.as_text(), content_type="text/plain; charset=utf-8"
        )
    queryset = filterset.qs.order_by("time", "id")
    response = StreamingHttpResponse(lines(queryset), content_type=content_type)
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = (
        f'attachment; filename="transfers-{stamp}.{extension}"'
    )
    return response


@never_cache
@staff_member_required
@permission_required(VIEW_PERMISSION, raise_exception=True)
def transfers_csv(request):
    return _stream(request, csv_lines, "text/csv; charset=utf-8", "csv")


@never_cache
@staff_member_required
@permission_required(VIEW_PERMISSION, raise_exception=True)
def transfers_excel_csv(request):
    return _stream(request, excel_csv_lines, "text/csv; charset=utf-8", "csv")


@never_cache
@staff_member_required
@permission_required(VIEW_PERMISSION, raise_exception=True)
def transfers_xferlog(request):
    return _stream(request, xferlog_lines, "text/plain; charset=utf-8", "xferlog")
