"""Readable route templates for logs and metric labels.

Django's ``ResolverMatch.route`` joins the pieces of the matched patterns as written: a
``path()`` piece reads ``conversations/<int:pk>/``, but a ``re_path()`` or DRF router piece
is a regex (``^conversations/(?P<pk>[^/.]+)/?$``). Both become the template the docs
promise, ``/api/v1/conversations/{pk}``: anchors and the optional trailing slash go,
named groups and converters become ``{name}``. The set of templates is the set of routes,
so a label never grows with what clients send."""

import functools
import re

UNMATCHED = "<unmatched>"

# A named group, with at most one level of nested parentheses inside (character classes
# and escapes included): (?P<pk>[0-9]+), (?P<format>(json|csv)).
_NAMED_GROUP = re.compile(r"\(\?P<(\w+)>(?:[^()\\]|\\.|\((?:[^()\\]|\\.)*\))*\)")
_CONVERTER = re.compile(r"<(?:\w+:)?(\w+)>")
_ANCHOR = re.compile(r"(^|/)\^")
_OPTIONAL_SLASH_END = re.compile(r"/\?\$?$|\$$")
_ESCAPED = re.compile(r"\\(.)")


@functools.lru_cache(maxsize=1024)  # one entry a route (the set of routes is fixed)
def route_template(route: str | None) -> str:
    """``"/api/v1/conversations/{pk}/events"`` for the joined ``ResolverMatch.route``
    ``"api/v1/^conversations/(?P<pk>[0-9]+)/events/?$"``; ``"/"`` for the empty route
    (the chat page at the root)."""
    if route is None:
        return UNMATCHED
    template = _NAMED_GROUP.sub(r"{\1}", route)
    template = _CONVERTER.sub(r"{\1}", template)
    template = _ANCHOR.sub(r"\1", template)
    template = _OPTIONAL_SLASH_END.sub("", template)
    template = _ESCAPED.sub(r"\1", template)
    return "/" + template.lstrip("/")


def request_route(request) -> str:
    """The route template of the pattern that answered ``request``, or ``<unmatched>``
    when none did (a 404 from the resolver, a response from middleware before it)."""
    match = getattr(request, "resolver_match", None)
    return route_template(match.route) if match is not None else UNMATCHED
