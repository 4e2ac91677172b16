from base64 import b64decode
from datetime import UTC, datetime
from urllib import parse

from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.utils import timezone
from rest_framework import pagination
from rest_framework.exceptions import APIException

from .fields import MAX_ID


class InvalidCursor(APIException):
    """A ``?cursor=`` we did not hand out (400 ``invalid_cursor``). DRF answers 404 for
    some and lets others reach the database (a text position for an integer column is a
    500), so every part of the cursor is checked before it is used."""

    status_code = 400
    default_code = "invalid_cursor"
    default_detail = "Invalid cursor: use the 'next' or 'previous' link of a page as it was given."


# What a cursor of ours holds: o (offset), r (reverse), p (position), each at most once.
CURSOR_KEYS = frozenset("orp")


class CursorPagination(pagination.CursorPagination):
    """Keyset pagination: stable under inserts, and deep pages cost what the first does.

    Body: ``{"results": [...], "next": url|null, "previous": url|null}``. A cursor that is
    not one the API handed out is 400 ``invalid_cursor``.
    """

    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 50
    ordering = ("-created_at", "-id")

    def get_ordering(self, request, queryset, view):
        # A view names its keyset with ``cursor_ordering``; unique last column keeps it stable.
        ordering = getattr(view, "cursor_ordering", None) or self.ordering
        return (ordering,) if isinstance(ordering, str) else tuple(ordering)

    def paginate_queryset(self, queryset, request, view=None):
        self._model = queryset.model  # decode_cursor checks the position against its field
        return super().paginate_queryset(queryset, request, view)

    def decode_cursor(self, request):
        encoded = request.query_params.get(self.cursor_query_param)
        if encoded is None:
            return None
        try:
            querystring = b64decode(encoded.encode("ascii")).decode("ascii")
            tokens = parse.parse_qs(querystring, keep_blank_values=True, max_num_fields=len(CURSOR_KEYS))
            if not set(tokens) <= CURSOR_KEYS or any(len(values) != 1 for values in tokens.values()):
                raise ValueError(querystring)
            offset = pagination._positive_int(tokens.get("o", ["0"])[0], cutoff=self.offset_cutoff)
            reverse = {"0": False, "1": True}[tokens.get("r", ["0"])[0]]
            position = tokens.get("p", [None])[0]
            if position is not None:
                self._check_position(position)
        except (TypeError, ValueError, KeyError, ValidationError, OverflowError):
            raise InvalidCursor() from None
        return pagination.Cursor(offset=offset, reverse=reverse, position=position)

    def _check_position(self, position: str) -> None:
        """Raise ValueError unless ``position`` is a value of the ordering's first column
        that the database accepts (the position is compared with that column)."""
        if "\x00" in position:
            raise ValueError("NUL")
        try:
            field = self._model._meta.get_field(self.ordering[0].lstrip("-"))
        except (AttributeError, FieldDoesNotExist):
            return
        value = field.to_python(position)
        if isinstance(value, int) and not -MAX_ID - 1 <= value <= MAX_ID:
            raise ValueError("out of range")
        if isinstance(value, datetime):
            if timezone.is_naive(value):
                raise ValueError("naive")  # ours carry their offset
            value.astimezone(UTC)  # OverflowError at the ends of the calendar
