"""Consent rules: the policy decision, grant periods, names and page tokens (no I/O)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from healthbank.contracts.principal import Principal, PrincipalKind, Purpose
from healthbank.core.ids import MonotonicUlidGenerator
from services.consent.domain import (
    BASIS_BREAK_GLASS,
    BASIS_CATEGORY_NOT_GRANTED,
    BASIS_GRANT,
    BASIS_GRANT_EXPIRED,
    BASIS_GRANT_REVOKED,
    BASIS_NO_GRANT,
    BASIS_SELF,
    BREAK_GLASS_DURATION,
    PERSONAL_INSIGHTS,
    BreakGlassSession,
    Grant,
    decide,
    decode_page_token,
    encode_page_token,
    grant_manager_refusal,
    grant_name,
    grant_period_problems,
    max_grant_expiry,
    parse_grant_name,
    parse_proxy_name,
    proxy_name,
)

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
PERSON = "a" * 64
OTHER_PERSON = "b" * 64
HOSPITAL = "hosp-1"
OTHER_HOSPITAL = "hosp-2"

ALLERGY, CONDITION, PROCEDURE, OBSERVATION, IMAGING = 1, 2, 3, 4, 5

_ids = MonotonicUlidGenerator()


def make_grant(**changes: object) -> Grant:
    grant = Grant(
        grant_id=_ids(NOW - timedelta(days=1)),
        person_token=PERSON,
        grantee_hospital_id=HOSPITAL,
        grantee_clinician_id="",
        categories=frozenset(),
        valid_from=NOW - timedelta(days=1),
        expire_time=NOW + timedelta(days=30),
        create_time=NOW - timedelta(days=1),
        request_id="req-1",
    )
    return replace(grant, **changes)  # type: ignore[arg-type]


def make_session(**changes: object) -> BreakGlassSession:
    session = BreakGlassSession(
        session_id=_ids(NOW),
        person_token=PERSON,
        opened_by="er-doc-1",
        hospital_id=HOSPITAL,
        open_time=NOW - timedelta(minutes=30),
        expire_time=NOW - timedelta(minutes=30) + BREAK_GLASS_DURATION,
        sealed_justification=b"sealed",
    )
    return replace(session, **changes)  # type: ignore[arg-type]


CLINICIAN = Principal(PrincipalKind.CLINICIAN, "doc-7", hospital_id=HOSPITAL)
EMERGENCY = Principal(
    PrincipalKind.EMERGENCY, "er-doc-1", hospital_id=OTHER_HOSPITAL, purpose=Purpose.EMERGENCY
)


# --- SELF ---------------------------------------------------------------------------------


def test_patient_reads_own_data() -> None:
    patient = Principal(PrincipalKind.PATIENT, PERSON, purpose=Purpose.PATIENT_ACCESS)
    decision = decide([], [], patient, PERSON, [], NOW)
    assert decision.permit
    assert decision.basis == BASIS_SELF
    assert decision.permitted_categories == ()


def test_patient_self_permit_echoes_requested_categories() -> None:
    patient = Principal(PrincipalKind.PATIENT, PERSON, purpose=Purpose.PATIENT_ACCESS)
    decision = decide([], [], patient, PERSON, [IMAGING, ALLERGY], NOW)
    assert decision.permit
    assert decision.permitted_categories == (ALLERGY, IMAGING)


def test_patient_cannot_read_someone_else() -> None:
    patient = Principal(PrincipalKind.PATIENT, OTHER_PERSON, purpose=Purpose.PATIENT_ACCESS)
    # Even a grant for some hospital does not make another patient a reader.
    decision = decide([make_grant()], [], patient, PERSON, [], NOW)
    assert not decision.permit
    assert decision.basis == BASIS_NO_GRANT


# --- GRANT --------------------------------------------------------------------------------


def test_clinician_with_grant_for_all_categories() -> None:
    grant = make_grant()
    decision = decide([grant], [], CLINICIAN, PERSON, [], NOW)
    assert decision.permit
    assert decision.basis == BASIS_GRANT
    assert decision.authority_name == grant.name
    assert decision.permitted_categories == ()


def test_grant_for_all_categories_covers_an_explicit_request() -> None:
    decision = decide([make_grant()], [], CLINICIAN, PERSON, [ALLERGY, IMAGING], NOW)
    assert decision.permit
    assert decision.permitted_categories == (ALLERGY, IMAGING)


def test_permitted_categories_are_the_intersection() -> None:
    grant = make_grant(categories=frozenset({ALLERGY, CONDITION}))
    decision = decide([grant], [], CLINICIAN, PERSON, [ALLERGY, IMAGING], NOW)
    assert decision.permit
    assert decision.basis == BASIS_GRANT
    assert decision.permitted_categories == (ALLERGY,)


def test_request_for_all_under_a_partial_grant_lists_the_granted_categories() -> None:
    grant = make_grant(categories=frozenset({OBSERVATION, ALLERGY}))
    decision = decide([grant], [], CLINICIAN, PERSON, [], NOW)
    assert decision.permit
    assert decision.permitted_categories == (ALLERGY, OBSERVATION)


def test_several_grants_add_up_and_the_broadest_is_the_authority() -> None:
    narrow = make_grant(grant_id=_ids(NOW), categories=frozenset({ALLERGY}))
    broad = make_grant(grant_id=_ids(NOW), categories=frozenset({CONDITION, PROCEDURE}))
    decision = decide(
        [narrow, broad], [], CLINICIAN, PERSON, [ALLERGY, CONDITION, PROCEDURE, IMAGING], NOW
    )
    assert decision.permit
    assert decision.permitted_categories == (ALLERGY, CONDITION, PROCEDURE)
    assert decision.authority_name == broad.name


def test_all_category_grant_wins_over_partial_for_an_all_request() -> None:
    partial = make_grant(grant_id=_ids(NOW), categories=frozenset({ALLERGY}))
    everything = make_grant(grant_id=_ids(NOW - timedelta(days=3)))
    decision = decide([partial, everything], [], CLINICIAN, PERSON, [], NOW)
    assert decision.permit
    assert decision.permitted_categories == ()
    assert decision.authority_name == everything.name


def test_grant_for_one_clinician_excludes_colleagues() -> None:
    grant = make_grant(grantee_clinician_id="doc-9")
    assert not decide([grant], [], CLINICIAN, PERSON, [], NOW).permit
    named = Principal(PrincipalKind.CLINICIAN, "doc-9", hospital_id=HOSPITAL)
    assert decide([grant], [], named, PERSON, [], NOW).permit


def test_grant_for_another_hospital_does_not_apply() -> None:
    grant = make_grant(grantee_hospital_id=OTHER_HOSPITAL)
    decision = decide([grant], [], CLINICIAN, PERSON, [], NOW)
    assert not decision.permit
    assert decision.basis == BASIS_NO_GRANT


def test_grant_for_another_person_does_not_apply() -> None:
    grant = make_grant(person_token=OTHER_PERSON)
    assert decide([grant], [], CLINICIAN, PERSON, [], NOW).basis == BASIS_NO_GRANT


def test_clinician_without_hospital_is_denied() -> None:
    homeless = Principal(PrincipalKind.CLINICIAN, "doc-7")
    assert decide([make_grant()], [], homeless, PERSON, [], NOW).basis == BASIS_NO_GRANT


def test_grants_are_for_care_purposes_only() -> None:
    researcher_hat = Principal(
        PrincipalKind.CLINICIAN, "doc-7", hospital_id=HOSPITAL, purpose=Purpose.RESEARCH
    )
    decision = decide([make_grant()], [], researcher_hat, PERSON, [], NOW)
    assert not decision.permit
    assert decision.basis == BASIS_NO_GRANT


def test_no_grant_at_all() -> None:
    decision = decide([], [], CLINICIAN, PERSON, [], NOW)
    assert not decision.permit
    assert decision.basis == BASIS_NO_GRANT
    assert decision.authority_name == ""
    assert decision.permitted_categories == ()


# --- validity window edges -----------------------------------------------------------------


def test_grant_is_valid_from_its_first_instant() -> None:
    grant = make_grant(valid_from=NOW)
    assert decide([grant], [], CLINICIAN, PERSON, [], NOW).permit


def test_grant_not_yet_valid_is_no_grant() -> None:
    grant = make_grant(valid_from=NOW + timedelta(microseconds=1))
    decision = decide([grant], [], CLINICIAN, PERSON, [], NOW)
    assert not decision.permit
    assert decision.basis == BASIS_NO_GRANT


def test_grant_is_expired_at_its_expire_time() -> None:
    grant = make_grant(expire_time=NOW)
    decision = decide([grant], [], CLINICIAN, PERSON, [], NOW)
    assert not decision.permit
    assert decision.basis == BASIS_GRANT_EXPIRED


def test_grant_still_valid_one_microsecond_before_expiry() -> None:
    grant = make_grant(expire_time=NOW + timedelta(microseconds=1))
    assert decide([grant], [], CLINICIAN, PERSON, [], NOW).permit


def test_revoked_grant_denies_at_once() -> None:
    grant = make_grant(revoke_time=NOW)
    decision = decide([grant], [], CLINICIAN, PERSON, [], NOW)
    assert not decision.permit
    assert decision.basis == BASIS_GRANT_REVOKED


def test_revocation_in_the_future_of_a_past_decision_does_not_apply() -> None:
    grant = make_grant(revoke_time=NOW + timedelta(hours=1))
    assert decide([grant], [], CLINICIAN, PERSON, [], NOW).permit


def test_revoked_wins_over_expired() -> None:
    grant = make_grant(expire_time=NOW - timedelta(hours=1), revoke_time=NOW - timedelta(hours=2))
    assert decide([grant], [], CLINICIAN, PERSON, [], NOW).basis == BASIS_GRANT_REVOKED


def test_revoked_grant_reported_before_an_expired_one() -> None:
    expired = make_grant(grant_id=_ids(NOW), expire_time=NOW - timedelta(days=1))
    revoked = make_grant(grant_id=_ids(NOW), revoke_time=NOW - timedelta(minutes=5))
    assert decide([expired, revoked], [], CLINICIAN, PERSON, [], NOW).basis == BASIS_GRANT_REVOKED


def test_an_active_grant_beats_a_revoked_one() -> None:
    revoked = make_grant(grant_id=_ids(NOW), revoke_time=NOW - timedelta(minutes=5))
    active = make_grant(grant_id=_ids(NOW))
    decision = decide([revoked, active], [], CLINICIAN, PERSON, [], NOW)
    assert decision.permit
    assert decision.authority_name == active.name


# --- category edge cases -------------------------------------------------------------------


def test_category_not_granted() -> None:
    grant = make_grant(categories=frozenset({ALLERGY}))
    decision = decide([grant], [], CLINICIAN, PERSON, [IMAGING], NOW)
    assert not decision.permit
    assert decision.basis == BASIS_CATEGORY_NOT_GRANTED
    assert decision.permitted_categories == ()


def test_expired_grant_for_the_category_is_more_specific_than_category_not_granted() -> None:
    active_allergy = make_grant(grant_id=_ids(NOW), categories=frozenset({ALLERGY}))
    expired_imaging = make_grant(
        grant_id=_ids(NOW), categories=frozenset({IMAGING}), expire_time=NOW - timedelta(days=1)
    )
    decision = decide([active_allergy, expired_imaging], [], CLINICIAN, PERSON, [IMAGING], NOW)
    assert decision.basis == BASIS_GRANT_EXPIRED


def test_revoked_grant_for_another_category_does_not_explain_the_denial() -> None:
    revoked_allergy = make_grant(categories=frozenset({ALLERGY}), revoke_time=NOW)
    decision = decide([revoked_allergy], [], CLINICIAN, PERSON, [IMAGING], NOW)
    assert decision.basis == BASIS_NO_GRANT


# --- BREAK_GLASS ---------------------------------------------------------------------------


def test_break_glass_session_permits_its_opener() -> None:
    session = make_session()
    decision = decide([], [session], EMERGENCY, PERSON, [ALLERGY], NOW)
    assert decision.permit
    assert decision.basis == BASIS_BREAK_GLASS
    assert decision.authority_name == session.name
    assert decision.permitted_categories == (ALLERGY,)


def test_break_glass_session_is_personal() -> None:
    colleague = Principal(PrincipalKind.EMERGENCY, "er-doc-2", purpose=Purpose.EMERGENCY)
    decision = decide([], [make_session()], colleague, PERSON, [], NOW)
    assert not decision.permit
    assert decision.basis == BASIS_NO_GRANT


def test_break_glass_session_is_for_one_person() -> None:
    session = make_session(person_token=OTHER_PERSON)
    assert not decide([], [session], EMERGENCY, PERSON, [], NOW).permit


def test_break_glass_session_ends_at_its_expire_time() -> None:
    session = make_session(open_time=NOW - BREAK_GLASS_DURATION, expire_time=NOW)
    assert not decide([], [session], EMERGENCY, PERSON, [], NOW).permit
    still_open = make_session(expire_time=NOW + timedelta(microseconds=1))
    assert decide([], [still_open], EMERGENCY, PERSON, [], NOW).permit


def test_break_glass_needs_an_emergency_actor() -> None:
    clinician = Principal(PrincipalKind.CLINICIAN, "er-doc-1", hospital_id=HOSPITAL)
    decision = decide([], [make_session()], clinician, PERSON, [], NOW)
    assert not decision.permit


def test_emergency_actor_without_session_falls_back_to_grants() -> None:
    at_hospital = Principal(
        PrincipalKind.EMERGENCY, "er-doc-3", hospital_id=HOSPITAL, purpose=Purpose.EMERGENCY
    )
    decision = decide([make_grant()], [], at_hospital, PERSON, [], NOW)
    assert decision.permit
    assert decision.basis == BASIS_GRANT


def test_break_glass_duration_is_four_hours() -> None:
    assert timedelta(hours=4) == BREAK_GLASS_DURATION


# --- non-clinical readers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "purpose"),
    [
        (PrincipalKind.SERVICE, Purpose.OPERATIONS),
        (PrincipalKind.SERVICE, Purpose.TREATMENT),
        (PrincipalKind.RESEARCHER, Purpose.RESEARCH),
        (PrincipalKind.COMMITTEE, Purpose.OPERATIONS),
    ],
)
def test_non_clinical_readers_are_denied(kind: PrincipalKind, purpose: Purpose) -> None:
    reader = Principal(kind, "ingest", hospital_id=HOSPITAL, purpose=purpose)
    decision = decide([make_grant()], [make_session()], reader, PERSON, [], NOW)
    assert not decision.permit
    assert decision.basis == BASIS_NO_GRANT


# --- a service learns only the patient's opt-in to its own analysis (ADR 30) ---------------

AI_ALERT = Principal(PrincipalKind.SERVICE, "ai-alert", purpose=Purpose.OPERATIONS)


def opt_in(**changes: object) -> Grant:
    return make_grant(
        grantee_hospital_id="ai-alert", categories=frozenset({PERSONAL_INSIGHTS}), **changes
    )


def test_a_service_named_by_an_opt_in_is_permitted_the_opt_in_category() -> None:
    decision = decide([opt_in()], [], AI_ALERT, PERSON, [PERSONAL_INSIGHTS], NOW)
    assert decision.permit
    assert decision.basis == BASIS_GRANT
    assert decision.permitted_categories == (PERSONAL_INSIGHTS,)


@pytest.mark.parametrize(
    ("grants", "categories", "basis"),
    [
        ([], [PERSONAL_INSIGHTS], BASIS_NO_GRANT),
        # A hospital's grant is no opt-in, whatever it covers.
        ([make_grant()], [PERSONAL_INSIGHTS], BASIS_NO_GRANT),
        # The opt-in never opens records to the service.
        ([opt_in()], [4], BASIS_NO_GRANT),
        ([opt_in()], [], BASIS_NO_GRANT),
        ([opt_in(revoke_time=NOW - timedelta(hours=1))], [PERSONAL_INSIGHTS], "GRANT_REVOKED"),
        ([opt_in(expire_time=NOW)], [PERSONAL_INSIGHTS], "GRANT_EXPIRED"),
        ([opt_in(person_token="ab" * 32)], [PERSONAL_INSIGHTS], BASIS_NO_GRANT),
    ],
)
def test_without_an_active_opt_in_a_service_is_denied(
    grants: list[Grant], categories: list[int], basis: str
) -> None:
    decision = decide(grants, [], AI_ALERT, PERSON, categories, NOW)
    assert not decision.permit
    assert decision.basis == basis


def test_an_opt_in_to_one_service_is_not_another_services() -> None:
    ingest = Principal(PrincipalKind.SERVICE, "ingest", purpose=Purpose.OPERATIONS)
    assert not decide([opt_in()], [], ingest, PERSON, [PERSONAL_INSIGHTS], NOW).permit


# --- grant periods -------------------------------------------------------------------------


def test_grant_period_ok() -> None:
    assert grant_period_problems(None, NOW + timedelta(days=1), NOW) == []
    assert grant_period_problems(NOW, NOW + timedelta(days=1), NOW) == []


def test_grant_period_must_end_in_the_future() -> None:
    assert grant_period_problems(None, NOW, NOW) == [("expire_time", "must be in the future")]


def test_grant_period_at_most_ten_years() -> None:
    assert grant_period_problems(None, max_grant_expiry(NOW), NOW) == []
    too_far = max_grant_expiry(NOW) + timedelta(microseconds=1)
    assert grant_period_problems(None, too_far, NOW) == [
        ("expire_time", "must be at most 10 years ahead")
    ]


def test_grant_period_must_start_before_it_ends() -> None:
    end = NOW + timedelta(days=1)
    assert grant_period_problems(end, end, NOW) == [("valid_from", "must be before expire_time")]


def test_ten_years_from_a_leap_day() -> None:
    leap = datetime(2032, 2, 29, 8, 0, tzinfo=UTC)
    assert max_grant_expiry(leap) == datetime(2042, 2, 28, 8, 0, tzinfo=UTC)
    assert max_grant_expiry(NOW) == datetime(2040, 6, 1, 12, 0, tzinfo=UTC)


# --- names and page tokens ----------------------------------------------------------------


def test_names_round_trip() -> None:
    grant_id = _ids(NOW)
    name = grant_name(PERSON, grant_id)
    assert name == f"persons/{PERSON}/grants/{grant_id}"
    assert parse_grant_name(name) == (PERSON, grant_id)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "persons/",
        "persons/ABC",
        f"persons/{PERSON}/grants/",
        f"persons/{PERSON}/grants/not-a-ulid",
        f"patients/{PERSON}/grants/01HZY3M8Q6X0Z6E4J9T6R2K1AB",
        f"persons/{PERSON.upper()}/grants/01HZY3M8Q6X0Z6E4J9T6R2K1AB",
        f"persons/{PERSON}/grants/01HZY3M8Q6X0Z6E4J9T6R2K1AB\n",
        f"persons/{PERSON}/grants/01HZY3M8Q6X0Z6E4J9T6R2K1AB/x",
    ],
)
def test_malformed_grant_names(name: str) -> None:
    assert parse_grant_name(name) is None


def test_page_token_round_trip_and_binding() -> None:
    grant_id = _ids(NOW)
    token = encode_page_token(PERSON, grant_id)
    assert decode_page_token(token, PERSON) == grant_id
    # A token is only good for the list it came from.
    assert decode_page_token(token, OTHER_PERSON) is None


@pytest.mark.parametrize("token", ["!!!", "abc", "Z3JhbnRzLnYxOmFhYTp4", "\u00e9t\u00e9"])
def test_malformed_page_tokens(token: str) -> None:
    assert decode_page_token(token, PERSON) is None


# --- who manages a person's grants -----------------------------------------------------------

PROXY_ID = "guardian-17"


@pytest.mark.parametrize(
    ("actor", "registered", "refusal"),
    [
        (Principal(PrincipalKind.PATIENT, PERSON), False, None),
        (Principal(PrincipalKind.PATIENT, OTHER_PERSON), False, "NOT_DATA_SUBJECT"),
        (Principal(PrincipalKind.PROXY, PROXY_ID), True, None),
        (Principal(PrincipalKind.PROXY, PROXY_ID), False, "PROXY_NOT_REGISTERED"),
        (Principal(PrincipalKind.SERVICE, "record-lookup"), False, "PRINCIPAL_KIND_NOT_ALLOWED"),
        (Principal(PrincipalKind.CLINICIAN, "doc-7", "h1"), False, "PRINCIPAL_KIND_NOT_ALLOWED"),
        (
            Principal(PrincipalKind.HOSPITAL_ENGINE, "h1-engine", "h1"),
            False,
            "PRINCIPAL_KIND_NOT_ALLOWED",
        ),
    ],
)
def test_only_the_patient_or_a_registered_proxy_manages_grants(
    actor: Principal, registered: bool, refusal: str | None
) -> None:
    assert grant_manager_refusal(actor, PERSON, registered_proxy=registered) == refusal


def test_proxy_names_round_trip_and_reject_malformed_ones() -> None:
    name = proxy_name(PERSON, PROXY_ID)
    assert name == f"persons/{PERSON}/proxies/{PROXY_ID}"
    assert parse_proxy_name(name) == (PERSON, PROXY_ID)
    for malformed in (
        f"persons/{PERSON}/proxies/",
        f"persons/{PERSON}/proxies/a b",
        f"persons/ABC/proxies/{PROXY_ID}",
        f"persons/{PERSON}/grants/{PROXY_ID}",
    ):
        assert parse_proxy_name(malformed) is None
