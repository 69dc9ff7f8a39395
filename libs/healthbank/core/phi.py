"""Patterns that look like personal health identifiers, and how to mask them.

This is the one place that knows what an identifier "looks like"; logs.py and telemetry.py both
use it. It is a last line of defence, not a licence: code must never put national IDs, phone
numbers or names into logs, traces, metrics or error messages in the first place. Names in
particular cannot be recognised by pattern at all, so nothing here will catch them.

Every pattern requires the match to be a whole alphanumeric word (no ASCII letter or digit
directly before or after it). That keeps hex person tokens, ULIDs and trace ids intact even
when they contain long runs of digits, at the cost of missing an identifier glued to letters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

REDACTED = "[redacted]"

# An ASCII letter or digit may not touch the match on either side (see the module docstring).
_BEFORE = r"(?<![0-9A-Za-z])"
_AFTER = r"(?![0-9A-Za-z])"

PHI_PATTERNS: tuple[re.Pattern[str], ...] = (
    # 18-character resident ID (GB 11643): 17 digits and a digit or X check character.
    re.compile(_BEFORE + r"\d{17}[\dXx]" + _AFTER),
    # Mainland mobile number.
    re.compile(_BEFORE + r"1[3-9]\d{9}" + _AFTER),
    # Any other run of ten or more digits: card numbers, MRNs, landlines with area code.
    re.compile(_BEFORE + r"\d{10,}" + _AFTER),
)


def redact(text: str) -> str:
    """Return ``text`` with everything matching one of :data:`PHI_PATTERNS` replaced."""
    for pattern in PHI_PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


def contains_phi(text: str) -> bool:
    """Tell whether ``text`` contains something matching one of :data:`PHI_PATTERNS`."""
    return any(pattern.search(text) for pattern in PHI_PATTERNS)


def redact_value(value: object) -> object:
    """Redact strings and long integers inside ``value``, recursing into lists, tuples, dicts.

    Other values (floats, booleans, None, arbitrary objects) are returned unchanged; a caller
    that renders an arbitrary object with ``str()`` must redact that string itself.
    """
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return REDACTED if contains_phi(str(value)) else value
    if isinstance(value, Mapping):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_value(item) for item in value]
    if isinstance(value, tuple):
        return tuple(redact_value(item) for item in value)
    return value


def value_contains_phi(value: object) -> bool:
    """Tell whether a string, bytes, integer, or a sequence of them contains an identifier."""
    if isinstance(value, str):
        return contains_phi(value)
    if isinstance(value, bytes | bytearray):
        return contains_phi(bytes(value).decode("latin-1"))
    if isinstance(value, int) and not isinstance(value, bool):
        return contains_phi(str(value))
    if isinstance(value, Sequence | frozenset | set):
        return any(value_contains_phi(item) for item in value)
    return False
