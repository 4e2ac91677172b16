"""The API's JSON renderer: DRF's ``JSONRenderer``, serialized by orjson.

DRF renders with the standard library's ``json`` and its own encoder: a 20-row audits page
took ~220 us of CPU there and ~15 us in orjson (docs/benchmarks.md, "Fifth round"), on
paths whose whole request costs a few milliseconds. The bytes are DRF's: compact
separators, UTF-8 (``UNICODE_JSON``), U+2028/U+2029 escaped as DRF escapes them.

orjson is given only what it writes as DRF does. Dates and times, dataclasses, and
anything else it refuses (a ``Decimal``, a lazy translation string, an integer beyond 64
bits, a non-string key, nesting past 254) make it raise, and DRF's own renderer answers
instead, as it would have. So does a request for indented output. One difference is
allowed: a float in exponent form is spelt the shortest way (``1e16``, where ``json``
writes ``1e+16``), the same number; a NaN or infinity, which DRF's strict mode refuses with
a 500, is ``null``. Our bodies hold neither in practice (the parser refuses them on the
way in)."""

import orjson
from rest_framework.renderers import JSONRenderer

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_LINE_SEPARATORS = (b"\xe2\x80\xa8", b"\xe2\x80\xa9")


def dumps(data) -> bytes | None:
    """``data`` as DRF's compact ``JSONRenderer`` writes it, or None when orjson would not
    write the same (module docstring)."""
    try:
        rendered = orjson.dumps(data, option=_OPTIONS)
    except orjson.JSONEncodeError:
        return None
    # As DRF: U+2028 and U+2029 are valid JSON but end a line in JavaScript.
    if _LINE_SEPARATORS[0] in rendered or _LINE_SEPARATORS[1] in rendered:
        rendered = rendered.replace(_LINE_SEPARATORS[0], b"\\u2028").replace(_LINE_SEPARATORS[1], b"\\u2029")
    return rendered


class FastJSONRenderer(JSONRenderer):
    """``JSONRenderer`` through orjson when the output is the same (module docstring)."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is not None and self.get_indent(accepted_media_type, renderer_context or {}) is None:
            rendered = dumps(data)
            if rendered is not None:
                return rendered
        return super().render(data, accepted_media_type, renderer_context)
