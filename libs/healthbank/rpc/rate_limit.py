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
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]

from healthbank.contracts.principal import Principal, PrincipalKind
from healthbank.rpc.errors import ServiceError

__all__ = ["CallerRates", "Rate", "RateLimiter", "rate_limited", "rates_of"]

MAX_CALLERS = 100_000
"""At most this many callers' buckets are kept per process."""


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

    def admit(self, principal: Principal | None) -> float:
        """Spend one of ``principal``'s tokens: 0.0 if the call may go ahead, else the
        seconds until it could."""
        rate = self._rates.of(principal)
        if rate is None or principal is None:
            return 0.0
        key = (principal.kind.name, principal.hospital_id, principal.subject)
        now = self._clock()
        burst = max(rate.burst, 1.0)
        tokens, counted = self._buckets.pop(key, (burst, now))
        tokens = min(burst, tokens + (now - counted) * rate.per_second)
        if tokens >= 1.0:
            self._remember(key, (tokens - 1.0, now))
            return 0.0
        self._remember(key, (tokens, now))
        return (1.0 - tokens) / rate.per_second

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
