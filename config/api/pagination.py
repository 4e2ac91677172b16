from rest_framework import pagination


class CursorPagination(pagination.CursorPagination):
    """Keyset pagination: stable under inserts, and deep pages cost what the first does.

    Body: ``{"results": [...], "next": url|null, "previous": url|null}``.
    """

    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 50
    ordering = ("-created_at", "-id")

    def get_ordering(self, request, queryset, view):
        # A view names its keyset with ``cursor_ordering``; unique last column keeps it stable.
        ordering = getattr(view, "cursor_ordering", None) or self.ordering
        return (ordering,) if isinstance(ordering, str) else tuple(ordering)
