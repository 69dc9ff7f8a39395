"""What identity accepts as a patient's demographics, written once for identity (which
refuses anything else) and for ingest (which forwards what a hospital sent in that shape).

Each text field (names, phone, address) is at most :data:`MAX_DEMOGRAPHIC_LENGTH` printable
characters. A hospital's message is valid FHIR or HL7 with a 300-character address or a tab
inside a name; those are matching aids, not reasons to refuse the message's records, so
ingest sends them as :func:`matching_text` makes them.
"""

from __future__ import annotations

__all__ = ["MAX_DEMOGRAPHIC_LENGTH", "matching_text"]

MAX_DEMOGRAPHIC_LENGTH = 200
"""Characters identity accepts in a name, phone or address."""


def matching_text(value: str) -> str:
    """``value`` as identity accepts it: runs of whitespace (tabs, line breaks) made one
    space, other characters that do not print dropped, the first
    :data:`MAX_DEMOGRAPHIC_LENGTH` characters kept (two hospitals' long addresses are cut
    alike, so they still compare)."""
    words = ("".join(char for char in word if char.isprintable()) for word in value.split())
    return " ".join(word for word in words if word)[:MAX_DEMOGRAPHIC_LENGTH].rstrip()
