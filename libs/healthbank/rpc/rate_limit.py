"""Per-caller rate limits: one flooding hospital engine or clinician cannot starve the rest.

Each hospital engine (by hospital and subject) and each clinician (by hospital and staff
id) has a token bucket of its own: ``rate`` calls a second on average, up to ``burst`` at
once. A call over the limit is refused before the servicer runs with RESOURCE_EXHAUSTED
(reason ``RATE_LIMITED``) and RetryInfo saying when the next call will pass. Services and
every other kind of principal are not limited here: internal calls are bounded by the
callers that cause them. A rate of 0 turns a kind's limit off.

The buckets live in the process (one service replica): N replicas admit up to N times the
rate. The number of buckets kept is bounded; the least recently seen caller is forgotten
first (it starts again with a full bucket).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import grpc  # type: ignore[import-untyped, unused-ignore]

from healthbank.contracts.principal import Principal, PrincipalKind
from healthbank.rpc.errors import ServiceError

__all__ = [
    "Admission",
    "CallerRates",
    "Rate",
    "RateLimiter",
    "rate_limited",
    "rates_of",
    "refusal_hold",
]

MAX_CALLERS = 100_000
"""At most this many callers' buckets are kept per process."""

REFUSAL_HOLD_SECONDS = 1.0
"""How long a call over its limit may wait for a token, and how long a refused one is held
before its refusal is sent. Refusing costs the service's event loop about as much as a
cheap call (~3 ms in Python here): refused at once, a caller that ignores RetryInfo and
calls again at once made ingest refuse ~350 calls a second and slowed another engine's
messages 12x (tools/bench/neighbour.py). Held, each of its calls in flight is refused at
most once a second; the calls that wait go ahead one token apart. A caller that honours
RetryInfo waits no longer: the delay it is given is what is left after the hold."""


@dataclass(frozen=True)
class Rate:
    """``per_second`` calls a second on average, ``burst`` at once (0: unlimited)."""

    per_second: float
    burst: float

    @property
    def limited(self) -> bool:
        """Whether this rate limits anything."""
        return self.per_second > 0


@dataclass(frozen=True)
class CallerRates:
    """The rate of each limited kind of caller."""

    hospital_engine: Rate
    clinician: Rate

    def of(self, principal: Principal | None) -> Rate | None:
        """The rate ``principal`` is held to; None when it is not limited."""
        if principal is None:
            return None
        rate = {
            PrincipalKind.HOSPITAL_ENGINE: self.hospital_engine,
            PrincipalKind.CLINICIAN: self.clinician,
        }.get(principal.kind)
        return rate if rate is not None and rate.limited else None


def rates_of(settings: Any) -> CallerRates:
    """The rates ``settings`` configure (``rate_limit_*``; defaults where a settings object
    of a test has none)."""

    def rate(kind: str, per_second: float, burst: float) -> Rate:
        return Rate(
            float(getattr(settings, f"rate_limit_{kind}_per_second", per_second)),
            float(getattr(settings, f"rate_limit_{kind}_burst", burst)),
        )

    return CallerRates(
        hospital_engine=rate("hospital_engine", 0.0, 0.0),
        clinician=rate("clinician", 0.0, 0.0),
    )


class Admission(NamedTuple):
    """What :meth:`RateLimiter.admit` decided: go ahead after ``delay`` seconds, or (when
    ``refused``) not at all, a call going ahead at once in ``delay`` seconds."""

    delay: float
    refused: bool = False


class RateLimiter:
    """Token buckets per caller; :meth:`admit` spends one token or says how long to wait."""

    def __init__(
        self,
        rates: CallerRates,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_callers: int = MAX_CALLERS,
    ) -> None:
        self._rates = rates
        self._clock = clock
        self._max_callers = max_callers
        # caller key -> (tokens left, when they were counted)
        self._buckets: OrderedDict[tuple[str, str, str], tuple[float, float]] = OrderedDict()

    def admit(self, principal: Principal | None, max_delay: float = 0.0) -> Admission:
        """Take one of ``principal``'s tokens: at once, or the next one not yet promised if
        it comes within ``max_delay`` seconds (the call waits for it: queued calls go ahead
        evenly spaced, not in a burst). Otherwise the call is refused, and told how long
        until a call would go ahead at once."""
        rate = self._rates.of(principal)
        if rate is None or principal is None:
            return Admission(0.0)
        key = (principal.kind.name, principal.hospital_id, principal.subject)
        now = self._clock()
        burst = max(rate.burst, 1.0)
        tokens, counted = self._buckets.pop(key, (burst, now))
        # Below zero: tokens promised to calls still waiting for them.
        tokens = min(burst, tokens + (now - counted) * rate.per_second)
        delay = max(0.0, (1.0 - tokens) / rate.per_second)
        if delay <= max_delay:
            self._remember(key, (tokens - 1.0, now))
            return Admission(delay)
        self._remember(key, (tokens, now))
        return Admission(delay, refused=True)

    def _remember(self, key: tuple[str, str, str], bucket: tuple[float, float]) -> None:
        self._buckets[key] = bucket
        while len(self._buckets) > self._max_callers:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


def rate_limited(wait: float) -> ServiceError:
    """The refusal of a call over its caller's limit (PHI-free: no caller id)."""
    return ServiceError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "this caller's rate limit is exceeded; retry after the delay given",
        reason="RATE_LIMITED",
        # Rounded up to the millisecond: retrying at the delay finds a token.
        retry_delay=math.ceil(wait * 1000) / 1000,
    )


def refusal_hold(time_remaining: float | None) -> float:
    """Seconds to hold a refused call (:data:`REFUSAL_HOLD_SECONDS`), less when its
    deadline (``time_remaining`` seconds away; None: none) would pass first, so that the
    caller still hears RESOURCE_EXHAUSTED rather than DEADLINE_EXCEEDED."""
    if time_remaining is None:
        return REFUSAL_HOLD_SECONDS
    return max(0.0, min(REFUSAL_HOLD_SECONDS, time_remaining - 0.1))
