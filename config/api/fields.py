"""Bounds and fields shared by the API's input serializers."""

from rest_framework import serializers

# Ids are BigAutoField: a larger integer can name no row, and handed to the database it
# overflows (SQLite raises OverflowError, a 500) instead of matching nothing.
MAX_ID = 2**63 - 1


class StrictCharField(serializers.CharField):
    """A text field that takes only a JSON string. DRF's ``CharField`` turns ``12345``
    into ``"12345"``; for a message or a title that is a client bug to report, not to
    guess around. (NUL and lone surrogates are refused by ``CharField`` itself.)"""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def ObjectIdField(**kwargs) -> serializers.IntegerField:  # noqa: N802 (reads as a field class)
    """The id of a row named in a body or query: a positive integer a BigAutoField can hold."""
    return serializers.IntegerField(min_value=1, max_value=MAX_ID, **kwargs)
