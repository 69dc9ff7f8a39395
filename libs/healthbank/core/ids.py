"""ULIDs: 128-bit, time-sortable identifiers in 26 characters of Crockford base32.

48 bits of Unix time in milliseconds followed by 80 random bits (from ``os.urandom``). Two
ULIDs created in different milliseconds sort by time as strings; within one millisecond their
order is random unless they come from one :class:`MonotonicUlidGenerator`.
"""

from __future__ import annotations

import hashlib
import os
import threading
from datetime import UTC, datetime, timedelta

CROCKFORD_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ULID_LENGTH = 26

_TIME_BITS = 48
_RANDOM_BITS = 80
_MAX_MILLIS = (1 << _TIME_BITS) - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Decoding maps Crockford's digits onto int()'s base-32 digits: one C call, not a loop
# (ids are decoded for every audit event and record), after a membership check, since
# int() would also take the letters Crockford leaves out.
_TO_BASE32 = str.maketrans(CROCKFORD_ALPHABET, "0123456789abcdefghijklmnopqrstuv")
_CROCKFORD = frozenset(CROCKFORD_ALPHABET)


def new_ulid(now: datetime | None = None) -> str:
    """Return a new ULID for ``now`` (timezone-aware; default: the current time)."""
    randomness = int.from_bytes(os.urandom(_RANDOM_BITS // 8), "big")
    return _encode((_millis(now) << _RANDOM_BITS) | randomness)


def ulid_millis(ulid: str) -> int:
    """Return the milliseconds since the Unix epoch encoded in ``ulid``."""
    return _decode(ulid) >> _RANDOM_BITS


def ulid_time(ulid: str) -> datetime:
    """Return the UTC timestamp (millisecond precision) encoded in ``ulid``."""
    millis = ulid_millis(ulid)
    try:
        return _EPOCH + timedelta(milliseconds=millis)
    except OverflowError:
        # Valid ULIDs reach the year 10889; datetime stops at 9999.
        raise ValueError("ULID time is beyond the year 9999") from None


def derived_ulid(moment: datetime, seed: bytes) -> str:
    """The ULID of ``moment`` whose random part is a hash of ``seed``: the same inputs give
    the same id, so an event recorded twice under it is appended once (idempotency)."""
    digest = int.from_bytes(hashlib.sha256(seed).digest()[: _RANDOM_BITS // 8], "big")
    return _encode((_millis(moment) << _RANDOM_BITS) | digest)


def is_ulid(value: str) -> bool:
    """Tell whether ``value`` is a well-formed ULID (canonical upper-case form)."""
    try:
        _decode(value)
    except ValueError:
        return False
    return True


class MonotonicUlidGenerator:
    """Makes ULIDs that strictly increase, even when several fall in the same millisecond.

    Within one millisecond (or if the clock goes backwards) the previous value is incremented
    instead of drawing new randomness, as the ULID specification describes. Thread-safe.
    """

    def __init__(self) -> None:
        """Create a generator with no history."""
        self._lock = threading.Lock()
        self._last = 0

    def __call__(self, now: datetime | None = None) -> str:
        """Return the next ULID for ``now`` (default: the current time)."""
        millis = _millis(now)
        with self._lock:
            if millis > self._last >> _RANDOM_BITS:
                randomness = int.from_bytes(os.urandom(_RANDOM_BITS // 8), "big")
                value = (millis << _RANDOM_BITS) | randomness
            else:
                value = self._last + 1
                if value >> _RANDOM_BITS > _MAX_MILLIS:
                    raise OverflowError("ULID space exhausted")
            self._last = value
        return _encode(value)


def _millis(now: datetime | None) -> int:
    """Milliseconds since the Unix epoch, validated to fit the 48-bit time field."""
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    # Integer arithmetic: float timestamps lose the millisecond near the far end of the range.
    millis = (now - _EPOCH) // timedelta(milliseconds=1)
    if not 0 <= millis <= _MAX_MILLIS:
        raise ValueError("time is outside the range a ULID can encode")
    return millis


def _encode(value: int) -> str:
    """Encode a 128-bit integer as 26 Crockford base32 characters."""
    chars = []
    for _ in range(ULID_LENGTH):
        chars.append(CROCKFORD_ALPHABET[value & 0x1F])
        value >>= 5
    return "".join(reversed(chars))


def _decode(ulid: str) -> int:
    """Decode a canonical ULID into its 128-bit integer, raising ValueError when malformed."""
    if len(ulid) != ULID_LENGTH:
        raise ValueError(f"a ULID has {ULID_LENGTH} characters")
    # 26 * 5 = 130 bits: the first character may only carry 3 of them.
    if ulid[0] > "7":
        raise ValueError("ULID out of range")
    if not _CROCKFORD.issuperset(ulid):
        raise ValueError("ULID contains a character outside Crockford base32")
    return int(ulid.translate(_TO_BASE32), 32)
