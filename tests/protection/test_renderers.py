"""The API's JSON renderer (config/api/renderers.py): orjson's bytes where they are DRF's
JSONRenderer's, DRF's own renderer for everything else."""

import datetime
import decimal
import uuid

import pytest
from django.utils.translation import gettext_lazy
from rest_framework.renderers import JSONRenderer

from config.api.renderers import FastJSONRenderer, dumps

DRF = JSONRenderer()
FAST = FastJSONRenderer()

ALIKE = [
    {"id": 1, "email": "a@example.com", "ok": True, "none": None, "ratio": 0.25, "nested": {"list": [1, "two", 3.5]}},
    {"text": 'é, 中文, emoji 😀, quote " backslash \\ tab \t newline \n nul-free'},
    {"separators": "line\u2028paragraph\u2029end"},
    [{"uuid": uuid.UUID("12345678-1234-5678-1234-567812345678")}, -(2**63), 2**64 - 1],
    {"next": None, "previous": None, "results": []},
]


@pytest.mark.parametrize("data", ALIKE)
def test_the_same_bytes_as_drf(data):
    assert dumps(data) is not None  # orjson wrote it
    assert FAST.render(data) == DRF.render(data)


@pytest.mark.parametrize(
    "data",
    [
        {"at": datetime.datetime(2026, 12, 1, 3, 44, 33, 336000, tzinfo=datetime.UTC)},
        {"day": datetime.date(2026, 12, 1)},
        {"amount": decimal.Decimal("1.10")},
        {"label": gettext_lazy("Not found.")},
        {"big": 2**70},
        {1: "an int key"},
    ],
)
def test_what_orjson_would_write_otherwise_is_drfs(data):
    assert dumps(data) is None
    assert FAST.render(data) == DRF.render(data)


def test_indented_output_and_no_body_are_drfs():
    data = {"a": [1, 2]}
    assert FAST.render(data, "application/json; indent=4") == DRF.render(data, "application/json; indent=4")
    assert FAST.render(data, "application/json; indent=4").startswith(b"{\n    ")
    assert FAST.render(None) == DRF.render(None) == b""
