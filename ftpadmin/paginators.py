"""Paginators for tables too large to count: the audit trail."""

from django.core.paginator import Paginator
from django.utils.functional import cached_property


class CappedCountPaginator(Paginator):
    """Count at most ``cap`` rows, so a page costs the same at any table size.

    ``COUNT(*)`` over a filtered million-row table reads every matching row;
    counting ``cap + 1`` rows stops early. Past the cap, ``count`` is ``cap``
    (so pages up to ``cap / per_page`` are reachable; sort the other way for
    the oldest rows) and ``capped`` is true, which the templates show as
    "more than N".
    """

    cap = 1000

    def __init__(self, *args, cap=None, **kwargs):
        super().__init__(*args, **kwargs)
        if cap is not None:
            self.cap = cap
        self.capped = False

    @cached_property
    def count(self):
        # No ORDER BY: any cap + 1 matching rows will do, the first ones found.
        rows = self.object_list.order_by().values("pk")[: self.cap + 1].count()
        self.capped = rows > self.cap
        return min(rows, self.cap)


class KnownCountPaginator(Paginator):
    """A paginator told its count, for views that computed it already."""

    def __init__(self, object_list, per_page, count, **kwargs):
        super().__init__(object_list, per_page, **kwargs)
        self._known_count = count

    @cached_property
    def count(self):
        return self._known_count
