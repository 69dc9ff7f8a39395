"""`healthbank demo`: two synthetic hospitals and the two scenarios that show the
data center working, played over real gRPC against a running stack.

Scenario A: a CT from hospital A becomes visible to a doctor at hospital B once
the patient grants access (PERMISSION_DENIED before the grant).
Scenario B: an emergency doctor swipes a national ID card and gets the
RED / YELLOW / GREEN light with the facts behind it; the access is in the audit log.

The scenario functions return what they saw, so the end-to-end tests assert on
exactly what the demo prints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from healthbank.audit.v1 import audit_pb2, audit_pb2_grpc
from healthbank.common.v1 import common_pb2
from healthbank.consent.v1 import consent_pb2, consent_pb2_grpc
from healthbank.contracts.principal import Principal, PrincipalKind, Purpose, encode_token
from healthbank.core.ids import new_ulid
from healthbank.dev.synthetic import (
    HOSPITAL_A,
    HOSPITAL_B,
    Hospital,
    Patient,
    ct_study,
    emergency_history_bundle,
    fresh_patient,
)
from healthbank.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from healthbank.ledger.merkle import verify_inclusion
from healthbank.ledger.tree_head import event_leaf_hash
from healthbank.record_lookup.v1 import record_lookup_pb2, record_lookup_pb2_grpc
from healthbank.rpc.clients import open_channel
from healthbank.rpc.errors import error_details

CLINICIAN_B = Principal(PrincipalKind.CLINICIAN, "dr-b-0042", HOSPITAL_B.hospital_id)
EMERGENCY_B = Principal(
    PrincipalKind.EMERGENCY,
    "er-b-0007",
    HOSPITAL_B.hospital_id,
    roles=("emergency-physician",),
    purpose=Purpose.EMERGENCY,
)


def engine_principal(hospital: Hospital) -> Principal:
    """The integration engine of a hospital, bound to that hospital."""
    return Principal(
        PrincipalKind.HOSPITAL_ENGINE, f"{hospital.hospital_id}-engine", hospital.hospital_id
    )


def patient_principal(person_token: str) -> Principal:
    """The patient, acting through the patient app."""
    return Principal(PrincipalKind.PATIENT, person_token, purpose=Purpose.PATIENT_ACCESS)


class DemoClient:
    """Generated-client stubs over one channel per service, with per-principal tokens."""

    def __init__(self, addresses: Mapping[str, str], auth_secret: bytes) -> None:
        """Open channels to ``addresses`` (service → host:port)."""
        self._secret = auth_secret
        self._channels = {name: open_channel(a) for name, a in addresses.items()}
        self.ingest = ingest_pb2_grpc.IngestServiceStub(self._channels["ingest"])
        self.consent = consent_pb2_grpc.ConsentServiceStub(self._channels["consent"])
        self.lookup = record_lookup_pb2_grpc.RecordLookupServiceStub(
            self._channels["record-lookup"]
        )
        self.audit = audit_pb2_grpc.AuditServiceStub(self._channels["audit"])

    def auth(self, principal: Principal) -> tuple[tuple[str, str], ...]:
        """Call metadata carrying a signed token for ``principal``."""
        return (("authorization", f"Bearer {encode_token(principal, self._secret)}"),)

    async def close(self) -> None:
        """Close every channel."""
        for channel in self._channels.values():
            await channel.close()


@dataclass
class ScenarioA:
    """What scenario A observed."""

    person_token: str
    submitted: list[tuple[str, str, int]] = field(default_factory=list)
    denied_code: str = ""
    denied_reason: str = ""
    grant_name: str = ""
    history: list[common_pb2.Record] = field(default_factory=list)


@dataclass
class ScenarioB:
    """What scenario B observed."""

    summary: record_lookup_pb2.EmergencySummary
    access_events: list[audit_pb2.LoggedEvent]
    tree_head: audit_pb2.SignedTreeHead
    inclusion_verified: bool


async def submit(
    client: DemoClient,
    hospital: Hospital,
    fmt: common_pb2.SourceFormat,
    content: bytes,
    message_id: str,
) -> ingest_pb2.SubmitResponse:
    """Submit one message as ``hospital``'s integration engine."""
    request = ingest_pb2.SubmitRequest(
        hospital_id=hospital.hospital_id, message_id=message_id, format=fmt, content=content
    )
    response: ingest_pb2.SubmitResponse = await client.ingest.Submit(
        request, metadata=client.auth(engine_principal(hospital)), timeout=30
    )
    return response


async def scenario_a(client: DemoClient, person: Patient) -> ScenarioA:
    """Hospital A's CT reaches a doctor at hospital B only after the patient's grant."""
    bundle = await submit(
        client,
        HOSPITAL_A,
        common_pb2.SOURCE_FORMAT_FHIR_R4_JSON,
        emergency_history_bundle(person, f"bundle-{person.mrn}"),
        f"bundle-{person.mrn}",
    )
    ct = await submit(
        client, HOSPITAL_A, common_pb2.SOURCE_FORMAT_DICOM, ct_study(person), f"ct-{person.mrn}"
    )
    result = ScenarioA(person_token=ct.person_token)
    for label, response in (("FHIR bundle", bundle), ("DICOM CT", ct)):
        outcome = ingest_pb2.Outcome.Name(response.outcome)
        result.submitted.append((label, outcome, len(response.record_names)))

    parent = f"persons/{result.person_token}"
    history_request = record_lookup_pb2.GetHistoryRequest(parent=parent)
    try:
        async for _ in client.lookup.GetHistory(
            history_request, metadata=client.auth(CLINICIAN_B), timeout=30
        ):
            pass
    except grpc.aio.AioRpcError as denied:
        result.denied_code = denied.code().name
        result.denied_reason = error_details(denied).reason

    expire = Timestamp()
    expire.FromDatetime(datetime.now(UTC) + timedelta(days=30))
    grant = await client.consent.CreateGrant(
        consent_pb2.CreateGrantRequest(
            parent=parent,
            grant=consent_pb2.Grant(grantee_hospital_id=HOSPITAL_B.hospital_id, expire_time=expire),
            request_id=new_ulid(),
        ),
        metadata=client.auth(patient_principal(result.person_token)),
        timeout=30,
    )
    result.grant_name = grant.name
    async for item in client.lookup.GetHistory(
        history_request, metadata=client.auth(CLINICIAN_B), timeout=30
    ):
        result.history.append(item.record)
    return result


async def scenario_b(client: DemoClient, person: Patient, person_token: str) -> ScenarioB:
    """An ID-card swipe in the emergency room; then the patient sees who looked."""
    summary = await client.lookup.GetEmergencySummary(
        record_lookup_pb2.GetEmergencySummaryRequest(
            national_id=person.national_id,
            justification="unconscious on arrival, suspected anaphylaxis",
        ),
        metadata=client.auth(EMERGENCY_B),
        timeout=30,
    )
    patient_auth = client.auth(patient_principal(person_token))
    events = await client.audit.ListAccessEvents(
        audit_pb2.ListAccessEventsRequest(parent=f"persons/{person_token}", page_size=20),
        metadata=patient_auth,
        timeout=30,
    )
    head = await client.audit.GetTreeHead(
        audit_pb2.GetTreeHeadRequest(), metadata=patient_auth, timeout=30
    )
    proof = await client.audit.GetInclusionProof(
        audit_pb2.GetInclusionProofRequest(
            leaf_index=summary.audit_leaf_index, tree_size=head.tree_size
        ),
        metadata=patient_auth,
        timeout=30,
    )
    # The leaf hash is recomputed from the event the patient was shown, never taken from
    # the proof: an event changed in the store no longer verifies.
    shown = [e.event for e in events.events if e.leaf_index == summary.audit_leaf_index]
    verified = bool(shown) and verify_inclusion(
        event_leaf_hash(shown[0]),
        proof.leaf_index,
        proof.tree_size,
        list(proof.audit_path),
        head.root_hash,
    )
    return ScenarioB(summary, list(events.events), head, verified)


def format_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def render(values: Sequence[str]) -> str:
        return "|" + "|".join(f" {v:<{w}} " for v, w in zip(values, widths, strict=True)) + "|"

    body = [render(r) for r in cells] or ["| (none) |"]
    return "\n".join([title, line, render(headers), line, *body, line])


def _when(stamp: Timestamp) -> str:
    return stamp.ToDatetime(UTC).strftime("%Y-%m-%d") if stamp.seconds else ""


def report_a(result: ScenarioA) -> str:
    """Scenario A as tables."""
    parts = [
        format_table(
            "Scenario A — hospital A sends a FHIR bundle and a CT",
            ["message", "outcome", "records"],
            result.submitted,
        ),
        f"Doctor at hospital B before consent: {result.denied_code} ({result.denied_reason})",
        f"Patient grants hospital B access: {result.grant_name}",
        format_table(
            "Doctor at hospital B after consent: cross-hospital history",
            ["when", "category", "code", "from", "tier", "imaging blob"],
            [
                (
                    _when(r.effective_time),
                    common_pb2.RecordCategory.Name(r.category).removeprefix("RECORD_CATEGORY_"),
                    f"{r.code.code} {r.code.display}".strip(),
                    r.source_hospital,
                    common_pb2.Tier.Name(r.tier).removeprefix("TIER_"),
                    r.blob_name[:22] + "…" if r.blob_name else "",
                )
                for r in result.history
            ],
        ),
    ]
    return "\n\n".join(parts)


def report_b(result: ScenarioB) -> str:
    """Scenario B as tables."""
    summary = result.summary
    light = record_lookup_pb2.Light.Name(summary.light).removeprefix("LIGHT_")
    facts = [
        (kind, f"{f.code.code} {f.code.display}".strip(), f.severity, _when(f.effective_time))
        for kind, group in (
            ("allergy", summary.allergies),
            ("surgery", summary.surgeries),
            ("condition", summary.conditions),
        )
        for f in group
    ]
    events = [
        (
            e.leaf_index,
            audit_pb2.Action.Name(e.event.action).removeprefix("ACTION_"),
            e.event.actor.subject,
            e.event.basis,
            "yes" if e.event.flagged_for_review else "",
        )
        for e in result.access_events
    ]
    return "\n\n".join(
        [
            f"Scenario B — emergency ID-card swipe\nHEALTH TRAFFIC LIGHT: {light} — "
            f"{summary.light_reason}",
            format_table("Facts behind the light", ["kind", "code", "severity", "since"], facts),
            format_table(
                "Audit log: who accessed this patient's data",
                ["leaf", "action", "actor", "basis", "flagged"],
                events,
            ),
            f"Signed tree head: size {result.tree_head.tree_size}, root "
            f"{result.tree_head.root_hash.hex()[:16]}…; inclusion proof of leaf "
            f"{summary.audit_leaf_index}: {'verified' if result.inclusion_verified else 'FAILED'}",
        ]
    )


def demo_problems(a: ScenarioA, b: ScenarioB) -> list[str]:
    """What the scenarios should have shown but did not (empty when all held)."""
    problems = []
    if a.denied_code != "PERMISSION_DENIED":
        problems.append(
            "scenario A: the doctor at hospital B was not refused before the grant "
            f"(got {a.denied_code or 'the history'})"
        )
    if not any(r.category == common_pb2.RECORD_CATEGORY_IMAGING for r in a.history):
        problems.append("scenario A: the CT is missing from the history after the grant")
    if b.summary.light == record_lookup_pb2.LIGHT_UNSPECIFIED:
        problems.append("scenario B: the emergency summary has no traffic light")
    if not any(e.event.flagged_for_review for e in b.access_events):
        problems.append("scenario B: the break-glass access is not flagged in the audit log")
    if not b.inclusion_verified:
        problems.append("scenario B: the audit inclusion proof did not verify")
    return problems


def describe_rpc_error(step: str, error: grpc.aio.AioRpcError) -> str:
    """One line naming the failed step, its status and reason (messages are PHI-free)."""
    details = error_details(error)
    reason = f" ({details.reason})" if details.reason else ""
    return f"{step}: {details.code.name}{reason}: {details.message}"


async def run_demo(addresses: Mapping[str, str], auth_secret: bytes) -> tuple[str, list[str]]:
    """Play both scenarios for a fresh invented patient.

    Returns the printed report and the problems found: empty when everything held.
    Each run uses its own patient, so the demo can be repeated against one stack.
    """
    client = DemoClient(addresses, auth_secret)
    person = fresh_patient()
    step = "scenario A"
    try:
        a = await scenario_a(client, person)
        step = "scenario B"
        b = await scenario_b(client, person, a.person_token)
    except grpc.aio.AioRpcError as error:
        return "", [describe_rpc_error(step, error)]
    finally:
        await client.close()
    return report_a(a) + "\n\n" + report_b(b), demo_problems(a, b)
