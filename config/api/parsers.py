"""The one strict JSON loader of the API, and the DRF parser built on it.

Python's ``json`` accepts documents our database refuses or our code cannot handle, and
each of them used to be a 500 deep inside a view:

- ``\\u0000`` in a string or a key: PostgreSQL refuses NUL in ``text`` and ``jsonb``;
- a lone surrogate (``"\\ud800"``): not a character, cannot be encoded as UTF-8;
- ``NaN``, ``Infinity``, ``-Infinity`` and numbers that overflow a float (``1e400`` is
  ``inf``): not JSON, and ``jsonb`` refuses them;
- deep nesting: ``json`` recurses, so 5,000 levels is a ``RecursionError``; we bound it
  at ``MAX_JSON_DEPTH``.

``loads`` refuses all of them with a ``ParseError`` (400 ``parse_error``) whose message
says what is wrong and where. It is used by ``StrictJSONParser`` (every DRF view, through
``DEFAULT_PARSER_CLASSES``), by the SSE chat view and by the WebSocket consumer: any entry
point that reads JSON from a client calls it. Valid surrogate *pairs* (``"\\ud83d\\ude00"``)
are one character once decoded and are accepted; integers of any size are accepted
(``jsonb`` keeps them; ``IntegerField`` bounds them where they name rows).
"""

import json
import math
import re
from itertools import accumulate

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# Deepest nesting of arrays/objects accepted, the body itself counting as level 1. No
# payload of the contract needs more than a handful; 64 leaves room for client metadata
# and stays far below Python's recursion limit (1000).
MAX_JSON_DEPTH = 64

# NUL, and any surrogate code point left after decoding (a lone one: pairs were combined).
_FORBIDDEN_CHARACTERS = re.compile("[\x00\ud800-\udfff]")
# Both can only reach a decoded string through an escape (a raw NUL is a control character
# json refuses, raw surrogate bytes are not UTF-8): without one, strings need no walk.
_SUSPICIOUS_ESCAPE = re.compile(r"\\u(?:0000|d[89a-f])", re.IGNORECASE)
# Depth is measured on the text, so the decoder never recurses past the bound: blank the
# strings (brackets inside them do not count), keep the brackets, add up +1/-1. Possessive
# and ending at the end of the text too, so a string is never rescanned (an unterminated
# one full of escaped quotes made the plain pattern cost seconds per 32 KB); the decoder
# refuses such a text right after.
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\Z)', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_CONTAINERS = (dict, list)
_WALKED = (dict, list, float)


class InvalidJSON(ParseError):
    """The body is not JSON this API accepts (400 ``parse_error``)."""

    def __init__(self, reason: str):
        super().__init__(f"Invalid JSON: {reason}.")


def _constant(name: str):
    raise InvalidJSON(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidJSON(f"the number {text[:40]} is out of range")
    return value


def _describe(path: tuple | None) -> str:
    # ``path`` is a linked list, (key, parent path) or None, so the walk builds no copies.
    keys = []
    while path is not None:
        key, path = path
        keys.append(f"[{key!r}]" if isinstance(key, str) else f"[{key}]")
    return "".join(reversed(keys)) or "the top level"


def _check_string(text: str, what: str, path: tuple | None) -> None:
    found = _FORBIDDEN_CHARACTERS.search(text)
    if found is None:
        return
    if found.group() == "\x00":
        raise InvalidJSON(f"{what} at {_describe(path)} contains a NUL character (\\u0000)")
    raise InvalidJSON(f"{what} at {_describe(path)} contains a lone surrogate (\\u{ord(found.group()):04x})")


def _too_deep(text: str) -> bool:
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return False
    brackets = _BRACKETS.findall(_STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > MAX_JSON_DEPTH


def check_value(value, *, strings: bool = True, depth: bool = True) -> None:
    """Raise ``InvalidJSON`` if a decoded value holds what ``loads`` refuses: NUL or lone
    surrogates in strings or keys (``strings``), nesting past ``MAX_JSON_DEPTH``
    (``depth``), non-finite floats. Iterative, so any depth is safe to check; for callers
    that got a value some other way than ``loads``."""
    if isinstance(value, str):
        if strings:
            _check_string(value, "a string", None)
        return
    stack = [(value, None, 1)]
    while stack:
        node, path, level = stack.pop()
        if isinstance(node, float):
            if not math.isfinite(node):
                raise InvalidJSON(f"the number at {_describe(path)} is not finite")
            continue
        if not isinstance(node, _CONTAINERS):
            continue
        if depth and level > MAX_JSON_DEPTH:
            raise InvalidJSON(f"nested deeper than {MAX_JSON_DEPTH} levels")
        for key, child in node.items() if isinstance(node, dict) else enumerate(node):
            if strings and isinstance(key, str):
                _check_string(key, "a key", path)
            if isinstance(child, str):
                if strings:
                    _check_string(child, "a string", (key, path))
            elif isinstance(child, _WALKED):
                stack.append((child, (key, path), level + 1))


def loads(data: bytes | str):
    """Decode a client's JSON document strictly (see the module docstring).

    ``bytes`` must be UTF-8. Raises ``InvalidJSON`` (a DRF ``ParseError``: 400
    ``parse_error``) with a message naming the problem; never anything else."""
    if isinstance(data, bytes | bytearray):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidJSON("the body is not UTF-8") from None
    if data.startswith("\ufeff"):
        data = data[1:]
    if _too_deep(data):
        raise InvalidJSON(f"nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        value = json.loads(data, parse_constant=_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise InvalidJSON(f"{exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except ValueError as exc:  # an integer past Python's 4300-digit conversion limit
        raise InvalidJSON(str(exc)) from None
    # Walk the strings only when the text can hold a bad one: an escape that makes it, or
    # (a str from a caller, not decoded bytes) the character itself.
    if _SUSPICIOUS_ESCAPE.search(data) or _FORBIDDEN_CHARACTERS.search(data):
        check_value(value, depth=False)
    return value


class StrictJSONParser(JSONParser):
    """``application/json`` through ``loads``: the DRF parser of every API view."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding") or "utf-8"
        raw = stream.read() if stream is not None else b""
        try:
            text = raw.decode(encoding)
        except (LookupError, UnicodeDecodeError):
            raise InvalidJSON(f"the body is not {encoding} text") from None
        return loads(text)
