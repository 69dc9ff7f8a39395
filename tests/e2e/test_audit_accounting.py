"""End to end: a known set of calls, then the patient's audit log, event by event.

The seven services run as processes (embedded defaults, then the real engines). A hospital
engine submits a patient's records; the patient registers a proxy; grants are created and
revoked by the patient and the proxy; a clinician reads the history and streams the CT;
an emergency doctor swipes the ID card (break-glass through the emergency flow); another
calls consent.BreakGlass directly and reads the history; the patient removes the proxy.
Every one of those calls must be in the log exactly once, in order, with the right action,
actor, recording service, basis and review flag, and nothing else may be there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from e2e_support import AUTH_SECRET
from google.protobuf.timestamp_pb2 import Timestamp

from healthbank.audit.v1 import audit_pb2
from healthbank.common.v1 import common_pb2
from healthbank.consent.v1 import consent_pb2
from healthbank.contracts.principal import Principal, PrincipalKind, Purpose
from healthbank.core.ids import new_ulid
from healthbank.dev import synthetic
from healthbank.dev.demo import DemoClient
from healthbank.dev.devstack import LocalStack
from healthbank.identity.v1 import identity_pb2, identity_pb2_grpc
from healthbank.ingest.v1 import ingest_pb2
from healthbank.record_lookup.v1 import record_lookup_pb2
from healthbank.rpc.clients import open_channel

ENGINE_A = Principal(
    PrincipalKind.HOSPITAL_ENGINE,
    "hospital-a-engine",
    synthetic.HOSPITAL_A.hospital_id,
    purpose=Purpose.OPERATIONS,
)
CLINICIAN_B = Principal(
    PrincipalKind.CLINICIAN,
    "dr-b-0042",
    synthetic.HOSPITAL_B.hospital_id,
    purpose=Purpose.TREATMENT,
)
EMERGENCY_B = Principal(
    PrincipalKind.EMERGENCY,
    "er-b-0007",
    synthetic.HOSPITAL_B.hospital_id,
    roles=("emergency-physician",),
    purpose=Purpose.EMERGENCY,
)
EMERGENCY_B2 = Principal(
    PrincipalKind.EMERGENCY,
    "er-b-0011",
    synthetic.HOSPITAL_B.hospital_id,
    roles=("emergency-physician",),
    purpose=Purpose.EMERGENCY,
)
PROXY = Principal(PrincipalKind.PROXY, "guardian-0001", purpose=Purpose.PATIENT_ACCESS)
TIMEOUT = 60


@dataclass(frozen=True)
class Expected:
    """What one audit event must say."""

    action: int
    recorded_by: str
    actor: Principal
    basis: str = ""
    flagged: bool = False


def seen(event: audit_pb2.AccessEvent) -> tuple[str, str, int, str, str, bool]:
    return (
        audit_pb2.Action.Name(event.action),
        event.recorded_by,
        event.actor.kind,
        event.actor.subject,
        event.basis,
        event.flagged_for_review,
    )


def wanted(expected: Expected) -> tuple[str, str, int, str, str, bool]:
    kinds = common_pb2.PrincipalKind
    return (
        audit_pb2.Action.Name(expected.action),  # type: ignore[arg-type]
        expected.recorded_by,
        kinds.Value(f"PRINCIPAL_KIND_{expected.actor.kind.name}"),
        expected.actor.subject,
        expected.basis,
        expected.flagged,
    )


RECORD_LOOKUP = Principal(PrincipalKind.SERVICE, "record-lookup", purpose=Purpose.OPERATIONS)
PRIVACY_OFFICER = Principal(PrincipalKind.PRIVACY_OFFICER, "po-0001", purpose=Purpose.OPERATIONS)


def national_id_lookup_event() -> Expected:
    """Identity's own event for the emergency flow's national-ID lookup.

    Only record-lookup may look a national ID up (docs/authorization.md), with its own
    service identity: identity records that caller; the ER physician is the actor of the
    break-glass and read events that follow.
    """
    return Expected(audit_pb2.ACTION_LOOKUP_NATIONAL_ID, "identity", RECORD_LOOKUP, "IDENTITY")


def patient(person_token: str) -> Principal:
    return Principal(PrincipalKind.PATIENT, person_token, purpose=Purpose.PATIENT_ACCESS)


async def test_every_call_is_audited_once_with_its_actor(any_stack: LocalStack) -> None:
    client = DemoClient(any_stack.addresses, AUTH_SECRET.encode())
    person = synthetic.patient(40)
    expected: list[Expected] = []
    try:
        # A hospital's engine submits a bundle and a CT: one write event per message.
        acks = []
        for fmt, content, message_id in (
            (
                common_pb2.SOURCE_FORMAT_FHIR_R4_JSON,
                synthetic.emergency_history_bundle(person, f"acct-bundle-{person.mrn}"),
                f"acct-bundle-{person.mrn}",
            ),
            (common_pb2.SOURCE_FORMAT_DICOM, synthetic.ct_study(person), f"acct-ct-{person.mrn}"),
        ):
            ack = await client.ingest.Submit(
                ingest_pb2.SubmitRequest(
                    hospital_id=ENGINE_A.hospital_id,
                    message_id=message_id,
                    format=fmt,
                    content=content,
                ),
                metadata=client.auth(ENGINE_A),
                timeout=TIMEOUT,
            )
            assert ack.outcome == ingest_pb2.OUTCOME_STORED
            acks.append(ack)
            expected.append(Expected(audit_pb2.ACTION_WRITE, "ingest", ENGINE_A, "INGEST"))
        person_token = acks[0].person_token
        parent = f"persons/{person_token}"
        owner = client.auth(patient(person_token))

        # The patient registers a proxy, who grants hospital B; the patient grants and
        # revokes another hospital themself.
        proxy = await client.consent.RegisterProxy(
            consent_pb2.RegisterProxyRequest(parent=parent, proxy_id=PROXY.subject),
            metadata=owner,
            timeout=TIMEOUT,
        )
        expected.append(
            Expected(
                audit_pb2.ACTION_CONSENT_CHANGE,
                "consent",
                patient(person_token),
                "PROXY_REGISTERED",
            )
        )
        by_proxy = await client.consent.CreateGrant(
            grant_request(parent, synthetic.HOSPITAL_B.hospital_id),
            metadata=client.auth(PROXY),
            timeout=TIMEOUT,
        )
        expected.append(
            Expected(audit_pb2.ACTION_CONSENT_CHANGE, "consent", PROXY, "GRANT_CREATED")
        )
        elsewhere = await client.consent.CreateGrant(
            grant_request(parent, "hospital-c"), metadata=owner, timeout=TIMEOUT
        )
        expected.append(
            Expected(
                audit_pb2.ACTION_CONSENT_CHANGE, "consent", patient(person_token), "GRANT_CREATED"
            )
        )
        await client.consent.RevokeGrant(
            consent_pb2.RevokeGrantRequest(name=elsewhere.name), metadata=owner, timeout=TIMEOUT
        )
        expected.append(
            Expected(
                audit_pb2.ACTION_CONSENT_CHANGE, "consent", patient(person_token), "GRANT_REVOKED"
            )
        )
        # The patient sees both grants, the revoked one with its revocation.
        listed = await client.consent.ListGrants(
            consent_pb2.ListGrantsRequest(parent=parent), metadata=owner, timeout=TIMEOUT
        )
        assert [(g.name, g.HasField("revoke_time")) for g in listed.grants] == [
            (elsewhere.name, True),
            (by_proxy.name, False),
        ]

        # A clinician at hospital B reads the history, then streams the CT it links to.
        history = [
            item.record
            async for item in client.lookup.GetHistory(
                record_lookup_pb2.GetHistoryRequest(parent=parent),
                metadata=client.auth(CLINICIAN_B),
                timeout=TIMEOUT,
            )
        ]
        expected.append(
            Expected(audit_pb2.ACTION_READ_HISTORY, "record-lookup", CLINICIAN_B, "GRANT")
        )
        (ct,) = [record for record in history if record.blob_name]
        chunks = [
            chunk
            async for chunk in client.lookup.GetImage(
                record_lookup_pb2.GetImageRequest(name=ct.name),
                metadata=client.auth(CLINICIAN_B),
                timeout=TIMEOUT,
            )
        ]
        assert b"".join(chunk.chunk for chunk in chunks) == synthetic.ct_study(person)
        expected.append(
            Expected(audit_pb2.ACTION_READ_IMAGE, "record-lookup", CLINICIAN_B, "GRANT")
        )

        # An ID-card swipe in the emergency room: break-glass through the emergency flow.
        summary = await client.lookup.GetEmergencySummary(
            record_lookup_pb2.GetEmergencySummaryRequest(
                national_id=person.national_id, justification="unconscious on arrival"
            ),
            metadata=client.auth(EMERGENCY_B),
            timeout=TIMEOUT,
        )
        assert summary.person_token == person_token
        expected.append(national_id_lookup_event())
        expected += [
            Expected(audit_pb2.ACTION_BREAK_GLASS, "consent", EMERGENCY_B, "BREAK_GLASS", True),
            Expected(
                audit_pb2.ACTION_READ_EMERGENCY, "record-lookup", EMERGENCY_B, "BREAK_GLASS", True
            ),
        ]

        # Break-glass called on consent directly is recorded too, and so is the read after.
        await client.consent.BreakGlass(
            consent_pb2.BreakGlassRequest(
                person_token=person_token, justification="collapsed in the waiting room"
            ),
            metadata=client.auth(EMERGENCY_B2),
            timeout=TIMEOUT,
        )
        expected.append(
            Expected(audit_pb2.ACTION_BREAK_GLASS, "consent", EMERGENCY_B2, "BREAK_GLASS", True)
        )
        async for _ in client.lookup.GetHistory(
            record_lookup_pb2.GetHistoryRequest(parent=parent),
            metadata=client.auth(EMERGENCY_B2),
            timeout=TIMEOUT,
        ):
            pass
        expected.append(
            Expected(
                audit_pb2.ACTION_READ_HISTORY, "record-lookup", EMERGENCY_B2, "BREAK_GLASS", True
            )
        )

        # A privacy officer reads which hospitals hold the person: identity records it.
        identity = identity_pb2_grpc.IdentityServiceStub(
            open_channel(any_stack.addresses["identity"])
        )
        person_view = await identity.GetPerson(
            identity_pb2.GetPersonRequest(name=parent),
            metadata=client.auth(PRIVACY_OFFICER),
            timeout=TIMEOUT,
        )
        assert {link.hospital_id for link in person_view.links} == {ENGINE_A.hospital_id}
        expected.append(
            Expected(audit_pb2.ACTION_READ_PERSON, "identity", PRIVACY_OFFICER, "IDENTITY")
        )

        await client.consent.RemoveProxy(
            consent_pb2.RemoveProxyRequest(name=proxy.name), metadata=owner, timeout=TIMEOUT
        )
        expected.append(
            Expected(
                audit_pb2.ACTION_CONSENT_CHANGE, "consent", patient(person_token), "PROXY_REMOVED"
            )
        )

        logged = await client.audit.ListAccessEvents(
            audit_pb2.ListAccessEventsRequest(parent=parent, page_size=500),
            metadata=owner,
            timeout=TIMEOUT,
        )
    finally:
        await client.close()
    events = [entry.event for entry in reversed(logged.events)]  # oldest first
    assert [seen(event) for event in events] == [wanted(entry) for entry in expected]
    # Each event names what it touched: the grant, proxy, session or record.
    named = {name for event in events for name in event.resource_names}
    assert {proxy.name, by_proxy.name, elsewhere.name, ct.name, summary.break_glass_name} <= named


def grant_request(parent: str, hospital_id: str) -> consent_pb2.CreateGrantRequest:
    expire = Timestamp()
    expire.FromDatetime(datetime.now(UTC) + timedelta(days=30))
    return consent_pb2.CreateGrantRequest(
        parent=parent,
        grant=consent_pb2.Grant(grantee_hospital_id=hospital_id, expire_time=expire),
        request_id=new_ulid(),
    )
