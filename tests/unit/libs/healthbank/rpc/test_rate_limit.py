"""Per-caller token buckets (healthbank.rpc.rate_limit): each hospital engine and each
clinician has its own; services and other kinds are not limited; a refusal says when to
retry."""

from __future__ import annotations

import grpc
import pytest

from healthbank.contracts.principal import Principal, PrincipalKind
from healthbank.core.config import load_settings
from healthbank.rpc.errors import to_rich_status
from healthbank.rpc.rate_limit import (
    Admission,
    CallerRates,
    Rate,
    RateLimiter,
    rate_limited,
    rates_of,
    refusal_hold,
)

ENGINE_A = Principal(PrincipalKind.HOSPITAL_ENGINE, "engine-a", "hospital-a")
ENGINE_B = Principal(PrincipalKind.HOSPITAL_ENGINE, "engine-b", "hospital-b")
CLINICIAN = Principal(PrincipalKind.CLINICIAN, "staff-1", "hospital-a")
SERVICE = Principal(PrincipalKind.SERVICE, "ingest")
RATES = CallerRates(hospital_engine=Rate(2.0, 3.0), clinician=Rate(1.0, 1.0))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_caller_gets_its_burst_then_waits_for_its_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(RATES, clock=clock)
    assert [limiter.admit(ENGINE_A) for _ in range(3)] == [Admission(0.0)] * 3
    # 2/s: the next token in 0.5 s
    assert limiter.admit(ENGINE_A) == (pytest.approx(0.5), True)
    clock.now += 0.5
    assert limiter.admit(ENGINE_A) == Admission(0.0)
    assert limiter.admit(ENGINE_A).refused


def test_calls_that_may_wait_are_queued_one_token_apart_then_refused() -> None:
    clock = Clock()
    limiter = RateLimiter(RATES, clock=clock)
    delays = [limiter.admit(ENGINE_A, max_delay=1.0) for _ in range(6)]
    # The burst of 3 at once, then the next two tokens (2/s) promised in 0.5 s and 1 s.
    assert delays[:5] == [(0.0, False)] * 3 + [(0.5, False), (1.0, False)]
    # The sixth would wait 1.5 s: refused, told when a call would go ahead at once.
    assert delays[5] == (pytest.approx(1.5), True)
    clock.now += 1.0  # the promised tokens are taken by the calls that waited
    assert limiter.admit(ENGINE_A) == (pytest.approx(0.5), True)
    clock.now += 0.5
    assert limiter.admit(ENGINE_A) == Admission(0.0)


def test_one_flooding_engine_does_not_spend_another_engines_tokens() -> None:
    limiter = RateLimiter(RATES, clock=Clock())
    for _ in range(50):
        limiter.admit(ENGINE_A, max_delay=1.0)
    assert limiter.admit(ENGINE_A).refused
    assert [limiter.admit(ENGINE_B) for _ in range(3)] == [Admission(0.0)] * 3


def test_clinicians_have_their_own_rate_and_services_none() -> None:
    limiter = RateLimiter(RATES, clock=Clock())
    assert limiter.admit(CLINICIAN) == Admission(0.0)
    assert limiter.admit(CLINICIAN) == (pytest.approx(1.0), True)
    assert all(limiter.admit(SERVICE) == Admission(0.0) for _ in range(1000))
    assert limiter.admit(None) == Admission(0.0)


def test_a_rate_of_zero_limits_nothing_and_is_the_default() -> None:
    limiter = RateLimiter(rates_of(load_settings({})), clock=Clock())
    assert all(limiter.admit(ENGINE_A) == Admission(0.0) for _ in range(1000))
    assert len(limiter) == 0


def test_the_settings_name_the_rates() -> None:
    rates = rates_of(
        load_settings(
            {
                "HEALTHBANK_RATE_LIMIT_HOSPITAL_ENGINE_PER_SECOND": "50",
                "HEALTHBANK_RATE_LIMIT_HOSPITAL_ENGINE_BURST": "100",
                "HEALTHBANK_RATE_LIMIT_CLINICIAN_PER_SECOND": "5",
                "HEALTHBANK_RATE_LIMIT_CLINICIAN_BURST": "10",
            }
        )
    )
    assert rates == CallerRates(hospital_engine=Rate(50, 100), clinician=Rate(5, 10))


def test_the_callers_kept_are_bounded() -> None:
    limiter = RateLimiter(RATES, clock=Clock(), max_callers=10)
    for index in range(100):
        limiter.admit(Principal(PrincipalKind.CLINICIAN, f"staff-{index}", "hospital-a"))
    assert len(limiter) == 10


def test_the_refusal_is_resource_exhausted_with_when_to_retry_and_no_caller_id() -> None:
    refusal = rate_limited(0.4321)
    assert refusal.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refusal.reason == "RATE_LIMITED"
    assert refusal.retry_delay == pytest.approx(0.433)
    status = to_rich_status(refusal)
    assert len(status.details) == 2  # ErrorInfo and RetryInfo
    assert "engine" not in refusal.message and "staff" not in refusal.message


def test_a_refused_call_is_held_but_never_past_its_deadline() -> None:
    assert refusal_hold(None) == 1.0
    assert refusal_hold(30.0) == 1.0
    assert refusal_hold(0.5) == pytest.approx(0.4)
    assert refusal_hold(0.05) == 0.0
