"""The committee's pure rules: screening, the tally under quorum and veto, budget units."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from services.consent.committee import (
    Choice,
    OutputKind,
    RequestState,
    Study,
    Vote,
    from_micro,
    screen,
    tally,
    to_micro,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
STUDY = Study(
    purpose="influenza burden by hospital",
    protocol="FLU-1",
    ethics_approval_reference="IRB-1",
    code_system="http://hl7.org/fhir/sid/icd-10",
    codes=("J10.1",),
    fields=("hospital", "record_count"),
    groupings=("hospital",),
    output_kind=OutputKind.AGGREGATES,
    period_start=T0,
    period_end=T0,
    epsilon_budget=1.0,
    access_until=T0,
)


def _votes(*choices: Choice) -> tuple[Vote, ...]:
    return tuple(Vote(f"m-{n}", choice, "why", T0) for n, choice in enumerate(choices))


def test_a_clean_study_passes_screening() -> None:
    assert screen(STUDY) == ()


def test_each_rule_is_cited_by_name() -> None:
    findings = screen(
        replace(
            STUDY,
            fields=("hospital", "phone", "MRN"),
            ethics_approval_reference="  ",
            purpose="Targeted   MARKETING of statins",
        )
    )
    assert [finding.rule for finding in findings] == [
        "DIRECT_IDENTIFIER_REQUESTED",
        "ETHICS_APPROVAL_MISSING",
        "PURPOSE_DENY_LISTED",
    ]
    assert findings[0].detail == "direct identifiers asked for: mrn, phone"
    assert findings[2].detail == "purpose is deny-listed: marketing"


def test_no_decision_before_the_quorum() -> None:
    assert tally(_votes(Choice.APPROVE, Choice.APPROVE), quorum=3, veto_allowed=True).state is None


def test_the_majority_decides_at_the_quorum_and_a_tie_rejects() -> None:
    approve = _votes(Choice.APPROVE, Choice.REJECT, Choice.APPROVE)
    assert tally(approve, quorum=3, veto_allowed=True).state == RequestState.APPROVED
    tie = _votes(Choice.APPROVE, Choice.REJECT)
    assert tally(tie, quorum=2, veto_allowed=True).state == RequestState.REJECTED


def test_a_veto_rejects_before_the_quorum_only_when_allowed() -> None:
    votes = _votes(Choice.APPROVE, Choice.VETO)
    assert tally(votes, quorum=3, veto_allowed=True).state == RequestState.REJECTED
    assert tally(votes, quorum=3, veto_allowed=False).state is None
    # Without vetoes a veto counts as a vote against.
    counted = _votes(Choice.APPROVE, Choice.VETO, Choice.APPROVE)
    assert tally(counted, quorum=3, veto_allowed=False).state == RequestState.APPROVED


def test_budget_units_add_up_exactly() -> None:
    assert to_micro(0.1) * 10 == to_micro(1.0)
    assert from_micro(to_micro(0.3)) == 0.3
    assert to_micro(0.0000001) == 1  # never spends less than asked
