from base64 import b64decode
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib import parse

from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.utils import timezone
from rest_framework import pagination
from rest_framework.exceptions import APIException
from rest_framework.response import Response

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
        keyset = self.plan(request, queryset.model, view)
        queryset = queryset.order_by(*keyset.ordering)
        if keyset.position is not None:
            queryset = queryset.filter(**{f"{keyset.position_field}__{keyset.position_lookup}": keyset.position})
        return self.take(list(queryset[keyset.offset : keyset.offset + keyset.limit]))

    # DRF's ``paginate_queryset`` split in two around the query, so that a caller that runs
    # the query itself (the audit list from the event loop, config/api/asyncdb.py) pages
    # exactly as the ORM path does: ``plan`` says what to read, ``take`` makes the page
    # (and the state ``get_paginated_response`` reads) from the rows read. The code is
    # DRF 3.16's, in the same order; only the queryset calls became the ``Keyset``.

    def plan(self, request, model, view=None) -> "Keyset":
        """What the page reads (cursor decoded and checked: ``InvalidCursor``)."""
        self._model = model  # decode_cursor checks the position against its field
        self.request = request
        self.page_size = self.get_page_size(request)
        self.base_url = request.build_absolute_uri()
        self.ordering = self.get_ordering(request, None, view)
        self.cursor = self.decode_cursor(request)
        if self.cursor is None:
            (offset, reverse, current_position) = (0, False, None)
        else:
            (offset, reverse, current_position) = self.cursor
        self._reverse, self._current_position = reverse, current_position
        ordering = pagination._reverse_ordering(self.ordering) if reverse else self.ordering
        order = self.ordering[0]
        # Test for: (cursor reversed) XOR (queryset reversed)
        lookup = "lt" if reverse != order.startswith("-") else "gt"
        return Keyset(
            ordering=tuple(ordering),
            position_field=order.lstrip("-"),
            position_lookup=lookup,
            position=current_position,
            offset=offset,
            # One more than the page, to know whether a page follows.
            limit=self.page_size + 1,
        )

    def take(self, results: list) -> list:
        """The page from the rows ``plan``'s keyset read (in that keyset's order)."""
        reverse, current_position, offset = (
            self._reverse,
            self._current_position,
            self.cursor.offset if self.cursor else 0,
        )
        self.page = list(results[: self.page_size])

        # Determine the position of the final item following the page.
        if len(results) > len(self.page):
            has_following_position = True
            following_position = self._get_position_from_instance(results[-1], self.ordering)
        else:
            has_following_position = False
            following_position = None

        if reverse:
            # The query ran in reverse: the page is put back in the list's order.
            self.page = list(reversed(self.page))
            self.has_next = (current_position is not None) or (offset > 0)
            self.has_previous = has_following_position
            if self.has_next:
                self.next_position = current_position
            if self.has_previous:
                self.previous_position = following_position
        else:
            self.has_next = has_following_position
            self.has_previous = (current_position is not None) or (offset > 0)
            if self.has_next:
                self.next_position = following_position
            if self.has_previous:
                self.previous_position = current_position

        if (self.has_previous or self.has_next) and self.template is not None:
            self.display_page_controls = True
        return self.page

    def page_body(self, data) -> dict:
        """``get_paginated_response(data).data`` without building the ``Response``."""
        return {"next": self.get_next_link(), "previous": self.get_previous_link(), "results": data}

    def get_paginated_response(self, data):
        return Response(self.page_body(data))

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


@dataclass(frozen=True)
class Keyset:
    """One page's read, as ``CursorPagination.plan`` decided it: ``ORDER BY ordering``
    (Django's spelling, ``-`` for descending), ``WHERE position_field <lookup> position``
    when ``position`` is not None (``lt`` or ``gt``; ``position`` is the cursor's string,
    checked against the field), then ``OFFSET offset LIMIT limit``."""

    ordering: tuple[str, ...]
    position_field: str
    position_lookup: str
    position: str | None
    offset: int
    limit: int
