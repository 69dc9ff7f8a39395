"""Research without seeing anyone, end to end (ADR 26): the seven services as processes,
hospitals' messages through ingest, and the `healthbank committee` / `healthbank research`
commands as a researcher and committee members run them.

request → screening → votes → grant → aggregate → synthetic cohort, and every step is
found in the audit log under the request's research ledger token. Nothing the commands
print or write carries a patient's name, ID number or phone number.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from e2e_support import AUTH_SECRET, identifiers

from healthbank.audit.v1 import audit_pb2
from healthbank.common.v1 import common_pb2
from healthbank.contracts.principal import Principal, PrincipalKind, Purpose
from healthbank.contracts.research import parse_research_request_name, research_ledger_token
from healthbank.dev import synthetic
from healthbank.dev.demo import DemoClient, submit
from healthbank.dev.devstack import LocalStack
from healthbank.ingest.v1 import ingest_pb2

AUDITOR = Principal(PrincipalKind.AUDITOR, "auditor-1", purpose=Purpose.OPERATIONS)
PEOPLE = [synthetic.patient(500 + index) for index in range(64)]


def influenza_bundle(person: synthetic.Patient, index: int) -> bytes:
    """The person's history plus an influenza diagnosis and a few visits, dated per person."""
    bundle = json.loads(synthetic.emergency_history_bundle(person, f"flu-{index}"))
    onset = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=11 * index)
    resources = [
        {
            "resourceType": "Condition",
            "clinicalStatus": {"coding": [{"code": "active"}]},
            "code": {"coding": [{"system": synthetic.ICD10, "code": "J10.1"}]},
            "subject": {"reference": "Patient/p1"},
            "onsetDateTime": onset.isoformat().replace("+00:00", "Z"),
        }
    ]
    for visit in range(index % 4):
        resources.append(
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "AMB",
                },
                "subject": {"reference": "Patient/p1"},
                "period": {
                    "start": (onset + timedelta(days=9 * (visit + 1) + index % 7))
                    .isoformat()
                    .replace("+00:00", "Z")
                },
            }
        )
    bundle["entry"] += [{"resource": resource} for resource in resources]
    return json.dumps(bundle).encode()


async def healthbank(stack: LocalStack, *args: str) -> str:
    """Run the `healthbank` command against the stack; its output (it must succeed)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "healthbank.cli", *args),
        env={
            **os.environ,
            "HEALTHBANK_AUTH_SECRET": AUTH_SECRET,
            "HEALTHBANK_CONSENT_ADDR": stack.addresses["consent"],
            "HEALTHBANK_AI_ALERT_ADDR": stack.addresses["ai-alert"],
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, err.decode()
    return out.decode()


def submit_args(fields: str, access_until: str) -> list[str]:
    return [
        *("research", "submit", "--as", "res-1"),
        *("--purpose", "influenza burden per hospital for vaccine planning"),
        *("--protocol", "FLU-2026-07", "--ethics", "IRB-2026-0107"),
        *("--codes", "J10.1", "--fields", fields, "--groupings", "hospital"),
        *("--output", "synthetic", "--from", "2010-01-01", "--until", "2030-01-01"),
        *("--access-until", access_until, "--epsilon", "2"),
    ]


async def test_request_screening_votes_grant_aggregate_and_synthetic_cohort(
    any_stack: LocalStack, tmp_path: Path
) -> None:
    client = DemoClient(any_stack.addresses, AUTH_SECRET.encode())
    try:
        for index, person in enumerate(PEOPLE):
            hospital = synthetic.HOSPITAL_A if index % 3 else synthetic.HOSPITAL_B
            response = await submit(
                client,
                hospital,
                common_pb2.SOURCE_FORMAT_FHIR_R4_JSON,
                influenza_bundle(person, index),
                f"research-e2e-{index}",
            )
            assert response.outcome == ingest_pb2.OUTCOME_STORED, response
        access_until = (datetime.now(UTC) + timedelta(days=60)).strftime("%Y-%m-%d")
        outputs = []

        # Screening: national IDs and names are refused at once, citing the rule.
        screened = await healthbank(
            any_stack, *submit_args("hospital,national_id,name", access_until)
        )
        outputs.append(screened)
        assert "rejected-by-screening" in screened
        assert "DIRECT_IDENTIFIER_REQUESTED" in screened

        filed = await healthbank(
            any_stack, *submit_args("hospital,first_year,record_count,span_days", access_until)
        )
        outputs.append(filed)
        request_name = re.search(r"researchRequests/[0-9A-Z]{26}", filed)
        assert request_name is not None and "under-review" in filed
        docket = await healthbank(any_stack, "committee", "list", "--as", "member-1")
        assert request_name.group() in docket
        for member in ("member-1", "member-2", "member-3"):
            voted = await healthbank(
                any_stack, "committee", "vote", request_name.group(), "approve", "--as", member
            )
        outputs.append(voted)
        assert "approved" in voted and "approved: 3 for, 0 against (quorum 3)" in voted
        grant = re.search(r"researchGrants/[0-9A-Z]{26}", voted)
        assert grant is not None

        counts = await healthbank(
            any_stack, "research", "aggregate", grant.group(), "--as", "res-1",
            "--kind", "count", "--group-by", "hospital", "--epsilon", "0.5",
        )  # fmt: skip
        outputs.append(counts)
        assert "hospital-a" in counts and "hospital-b" in counts
        assert "epsilon spent 0.5, left 1.5" in counts

        cohort_file = tmp_path / "cohort.csv"
        synthesized = await healthbank(
            any_stack, "research", "synthesize", grant.group(), "--as", "res-1",
            "--out", str(cohort_file), "--seed", "5",
        )  # fmt: skip
        outputs.append(synthesized)
        print(synthesized)
        assert re.search(r"rows equal to a real row\s+0\s", synthesized)
        assert re.search(r"\npassed\s+yes", synthesized)
        lines = cohort_file.read_text().splitlines()
        assert lines[0] == "hospital,first_year,record_count,span_days"
        assert len(lines) == len(PEOPLE) + 1

        status = await healthbank(any_stack, "research", "status", grant.group(), "--as", "res-1")
        assert "researchGrants/" in status and "0.5" in status

        # Every step is in the audit log, under the request's research ledger token.
        request_id = parse_research_request_name(request_name.group())
        assert request_id is not None
        listed = await client.audit.ListAccessEvents(
            audit_pb2.ListAccessEventsRequest(
                parent=f"persons/{research_ledger_token(request_id)}", page_size=100
            ),
            metadata=client.auth(AUDITOR),
        )
        steps = [logged.event.basis.split()[0] for logged in reversed(listed.events)]
        assert steps == [
            "RESEARCH_SUBMITTED",
            "COMMITTEE_VOTE",
            "COMMITTEE_VOTE",
            "COMMITTEE_VOTE",
            "RESEARCH_APPROVED",
            "BUDGET_SPENT",
            "AGGREGATE_RUN",
            "COHORT_SYNTHESIZED",
        ]
        assert {logged.event.recorded_by for logged in listed.events} == {"consent", "ai-alert"}

        # Nothing the researcher saw names anyone.
        seen = "\n".join(outputs).encode() + cohort_file.read_bytes()
        assert [needle for needle in identifiers(PEOPLE) if needle in seen] == []
    finally:
        await client.close()
