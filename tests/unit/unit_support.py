"""Helpers the unit tests share (no engines, no network: the real code, in process)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import pytest

from services.ingest.model import InvalidMessage


def rejection(
    parse: Callable[[bytes], object], content: bytes, reason: str, secrets: Iterable[str]
) -> list[tuple[str, str]]:
    """The violations ``parse`` rejects ``content`` with; asserts the rejection's ``reason``
    and that none of ``secrets`` (identifiers of the message) is echoed back."""
    with pytest.raises(InvalidMessage) as caught:
        parse(content)
    assert caught.value.reason == reason
    text = repr(caught.value.violations) + str(caught.value)
    for secret in secrets:
        assert secret not in text
    return caught.value.violations


def field_names(violations: Sequence[tuple[str, str]]) -> list[str]:
    """The fields of (field, description) violations, in order."""
    return [field for field, _ in violations]
