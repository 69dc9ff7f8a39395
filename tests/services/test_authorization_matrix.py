"""The authorization matrix: every principal by every RPC, over real gRPC, decided by the table.

The cases are generated from ``healthbank.rpc.authz.AUTHORIZATION_TABLE``: each principal a
deployment has (every service identity, hospital engines of this and another hospital,
clinicians and emergency staff of this and another hospital or of none, the patient and
another patient, proxy, privacy officer, auditor, committee, researcher, nobody) calls each
RPC of the seven running services with a request about one person of hospital A. A call the
table refuses must fail with PERMISSION_DENIED and the table's reason (UNAUTHENTICATED
without credentials); a call it admits must not be refused by authorization. Reads of
records are then decided by consent: with / without / expired / revoked / out-of-scope
grants and break-glass, each with its expected outcome.

The stack is a module fixture on the embedded defaults and, marked ``engines``, on the real
Cassandra; it is built from settings alone, so mTLS can be switched on in one place.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from auth_support import auth_metadata
from engine_support import cassandra_env, migrate_for
from google.protobuf import message_factory
from service_support import (
    TEST_CLIENT,
    RunningServices,
    research_request_example,
    service_settings,
    ts,
)

from healthbank.ai_alert.v1 import ai_alert_pb2
from healthbank.archive.v1 import archive_pb2
from healthbank.audit.v1 import audit_pb2
from healthbank.common.v1 import common_pb2
from healthbank.consent.v1 import consent_pb2
from healthbank.contracts.principal import Principal, PrincipalKind, Purpose, principal_to_proto
from healthbank.core.config import Settings
from healthbank.core.ids import new_ulid
from healthbank.crypto.pki import engine_common_name
from healthbank.dev import synthetic
from healthbank.identity.v1 import identity_pb2
from healthbank.ingest.v1 import ingest_pb2
from healthbank.record_lookup.v1 import record_lookup_pb2
from healthbank.rpc import authz, error_details
from healthbank.rpc.authz import AUTHORIZATION_TABLE, INTERNAL_SERVICES, TABLE_REASONS, refusal
from services.ai_alert.app import open_service as open_ai_alert
from services.archive.app import open_service as open_archive
from services.audit.app import open_service as open_audit
from services.consent.app import open_service as open_consent
from services.identity.app import open_service as open_identity
from services.ingest.app import open_service as open_ingest
from services.record_lookup.app import open_service as open_record_lookup

HOSPITAL_A = synthetic.HOSPITAL_A.hospital_id
HOSPITAL_B = synthetic.HOSPITAL_B.hospital_id
OTHER_PERSON = "e7" * 32
JUSTIFICATION = "unconscious on arrival, suspected anaphylaxis"
PK = PrincipalKind


def _principals() -> dict[str, Principal | None]:
    people: dict[str, Principal | None] = {
        f"service:{name}": Principal(PK.SERVICE, name, purpose=Purpose.OPERATIONS)
        for name in INTERNAL_SERVICES
    }
    people |= {
        "service:stranger": Principal(PK.SERVICE, "stranger", purpose=Purpose.OPERATIONS),
        "engine:own-hospital": Principal(PK.HOSPITAL_ENGINE, "hospital-a-engine", HOSPITAL_A),
        "engine:other-hospital": Principal(PK.HOSPITAL_ENGINE, "hospital-b-engine", HOSPITAL_B),
        "engine:no-hospital": Principal(PK.HOSPITAL_ENGINE, "stray-engine"),
        "clinician:own-hospital": Principal(PK.CLINICIAN, "dr-a-1", HOSPITAL_A),
        "clinician:other-hospital": Principal(PK.CLINICIAN, "dr-b-1", HOSPITAL_B),
        "clinician:no-hospital": Principal(PK.CLINICIAN, "dr-x-1"),
        "emergency:own-hospital": Principal(
            PK.EMERGENCY, "er-a-1", HOSPITAL_A, purpose=Purpose.EMERGENCY
        ),
        "emergency:other-hospital": Principal(
            PK.EMERGENCY, "er-b-1", HOSPITAL_B, purpose=Purpose.EMERGENCY
        ),
        "emergency:no-hospital": Principal(PK.EMERGENCY, "er-x-1", purpose=Purpose.EMERGENCY),
        "patient:other-person": Principal(PK.PATIENT, OTHER_PERSON, purpose=Purpose.PATIENT_ACCESS),
        "proxy": Principal(PK.PROXY, "proxy-1", purpose=Purpose.PATIENT_ACCESS),
        "privacy-officer": Principal(PK.PRIVACY_OFFICER, "po-1", purpose=Purpose.OPERATIONS),
        "auditor": Principal(PK.AUDITOR, "auditor-1", purpose=Purpose.OPERATIONS),
        "committee": Principal(PK.COMMITTEE, "member-1", purpose=Purpose.OPERATIONS),
        "researcher": Principal(PK.RESEARCHER, "res-1", purpose=Purpose.RESEARCH),
        "anonymous": None,
    }
    return people


PRINCIPALS = _principals()
OWN_PATIENT = "patient:own-person"  # the subject is the person token, known once seeded
CALLERS = [*PRINCIPALS, OWN_PATIENT]

# Methods whose admitted callers may still be refused by consent (the gate decides reads,
# consent decides whether a proxy is registered): PERMISSION_DENIED with consent's reason.
CONSENT_DECIDES = {
    ("/healthbank.record_lookup.v1.RecordLookupService/GetHistory", PK.CLINICIAN),
    ("/healthbank.record_lookup.v1.RecordLookupService/GetHistory", PK.EMERGENCY),
    ("/healthbank.ai_alert.v1.AiAlertService/GetPersonalInsights", PK.CLINICIAN),
    ("/healthbank.consent.v1.ConsentService/CreateGrant", PK.PROXY),
    ("/healthbank.consent.v1.ConsentService/RevokeGrant", PK.PROXY),
    ("/healthbank.consent.v1.ConsentService/ListGrants", PK.PROXY),
    ("/healthbank.record_lookup.v1.RecordLookupService/GetHistoryPages", PK.CLINICIAN),
    ("/healthbank.record_lookup.v1.RecordLookupService/GetHistoryPages", PK.EMERGENCY),
    ("/healthbank.record_lookup.v1.RecordLookupService/GetImage", PK.CLINICIAN),
    ("/healthbank.record_lookup.v1.RecordLookupService/GetImage", PK.EMERGENCY),
    ("/healthbank.record_lookup.v1.RecordLookupService/FindRecentExams", PK.CLINICIAN),
    ("/healthbank.record_lookup.v1.RecordLookupService/FindRecentExams", PK.EMERGENCY),
}


def _method_descriptors() -> dict[str, Any]:
    """Every RPC of the seven services by full method name (from the generated code)."""
    methods = {}
    for service in ("ingest", "identity", "consent", "record_lookup", "archive", "audit"):
        methods |= _methods_of(service)
    return methods | _methods_of("ai_alert")


def _methods_of(service: str) -> dict[str, Any]:
    module = importlib.import_module(f"healthbank.{service}.v1.{service}_pb2")
    return {
        f"/{descriptor.full_name}/{method.name}": method
        for descriptor in module.DESCRIPTOR.services_by_name.values()
        for method in descriptor.methods
    }


METHODS = _method_descriptors()
RPCS = list(METHODS)


class ConsentClock:
    """Consent's clock: the wall clock, moved back while a test makes a grant in the past."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class Stack:
    """The seven services running over mTLS, the seeded person, and channels to them."""

    settings: Settings
    running: RunningServices
    person: synthetic.Patient
    consent_clock: ConsentClock
    person_token: str = ""
    revocable_grant: str = ""
    blob_name: str = ""
    channels: dict[tuple[str, str], grpc.aio.Channel] = field(default_factory=dict)

    def principal(self, caller: str) -> Principal | None:
        if caller == OWN_PATIENT:
            return Principal(PK.PATIENT, self.person_token, purpose=Purpose.PATIENT_ACCESS)
        return PRINCIPALS[caller]

    def metadata(self, principal: Principal | None) -> tuple[tuple[str, str], ...]:
        return () if principal is None else auth_metadata(self.settings, principal)

    async def call(self, method: str, request: Any, principal: Principal | None) -> list[Any]:
        """Call ``method`` as ``principal`` (a request stream of one for streams): every
        response."""
        descriptor = METHODS[method]
        service, holder = method.split(".")[1].replace("_", "-"), certificate_holder(principal)
        if (service, holder) not in self.channels:
            self.channels[service, holder] = self.running.channel(service, holder=holder)
        channel = self.channels[service, holder]
        codecs = {
            "request_serializer": type(request).SerializeToString,
            "response_deserializer": message_factory.GetMessageClass(
                descriptor.output_type
            ).FromString,
        }
        options = {"metadata": self.metadata(principal), "timeout": 60}
        if descriptor.client_streaming:

            async def one() -> AsyncIterator[Any]:
                yield request

            stream = channel.stream_stream(method, **codecs)
            return [item async for item in stream(one(), **options)]
        if descriptor.server_streaming:
            unary_stream = channel.unary_stream(method, **codecs)
            return [item async for item in unary_stream(request, **options)]
        return [await channel.unary_unary(method, **codecs)(request, **options)]


def certificate_holder(principal: Principal | None) -> str:
    """Whose client certificate a call as ``principal`` presents: a service's or a hospital
    engine's own (the interceptor binds those tokens to them), the test's for everyone else."""
    if principal is not None and principal.kind == PK.SERVICE:
        return principal.subject
    if principal is not None and principal.kind == PK.HOSPITAL_ENGINE:
        return engine_common_name(principal.hospital_id)
    return TEST_CLIENT


def _request(stack: Stack, method: str, hospital_id: str = HOSPITAL_A) -> Any:
    """A well-formed request of ``method`` about the seeded person (or hospital A)."""
    person = stack.person
    token = stack.person_token
    parent = f"persons/{token}"
    name = method.rsplit("/", 1)[1]
    later = ts(datetime.now(UTC).replace(microsecond=0) + timedelta(days=30))
    requests: dict[str, Callable[[], Any]] = {
        "Submit": lambda: ingest_pb2.SubmitRequest(
            hospital_id=hospital_id,
            message_id="matrix-history",
            format=common_pb2.SOURCE_FORMAT_FHIR_R4_JSON,
            content=synthetic.emergency_history_bundle(person, "matrix-history"),
        ),
        "Resolve": lambda: identity_pb2.ResolveRequest(
            hospital_id=HOSPITAL_A, mrn=person.mrn, national_id=person.national_id
        ),
        "ResolveBatch": lambda: identity_pb2.ResolveBatchRequest(
            requests=[
                identity_pb2.ResolveRequest(
                    hospital_id=HOSPITAL_A, mrn=person.mrn, national_id=person.national_id
                )
            ]
        ),
        "LookupByNationalId": lambda: identity_pb2.LookupByNationalIdRequest(
            national_id=person.national_id
        ),
        "GetPerson": lambda: identity_pb2.GetPersonRequest(name=parent),
        "ListMergedPersons": lambda: identity_pb2.ListMergedPersonsRequest(parent=parent),
        "ListMatchReviews": lambda: identity_pb2.ListMatchReviewsRequest(),
        # Harmless when admitted: no such review or merge; a person is not merged into itself.
        "DecideMatchReview": lambda: identity_pb2.DecideMatchReviewRequest(review_id="none"),
        "MergePersons": lambda: identity_pb2.MergePersonsRequest(survivor=parent, absorbed=parent),
        "UnmergePersons": lambda: identity_pb2.UnmergePersonsRequest(merge_id="none"),
        "CreateGrant": lambda: consent_pb2.CreateGrantRequest(
            parent=parent,
            # A hospital no principal of the matrix belongs to: creating it changes no read.
            grant=consent_pb2.Grant(grantee_hospital_id="hospital-z", expire_time=later),
            request_id=new_ulid(),
        ),
        "RevokeGrant": lambda: consent_pb2.RevokeGrantRequest(name=stack.revocable_grant),
        "ListGrants": lambda: consent_pb2.ListGrantsRequest(parent=parent),
        "RegisterProxy": lambda: consent_pb2.RegisterProxyRequest(
            parent=parent, proxy_id="matrix-proxy"
        ),
        "RemoveProxy": lambda: consent_pb2.RemoveProxyRequest(name=f"{parent}/proxies/nobody"),
        "ListProxies": lambda: consent_pb2.ListProxiesRequest(parent=parent),
        "Check": lambda: consent_pb2.CheckRequest(
            person_token=token, accessor=principal_to_proto(PRINCIPALS["clinician:own-hospital"])
        ),
        "BreakGlass": lambda: consent_pb2.BreakGlassRequest(
            person_token=token, justification=JUSTIFICATION
        ),
        "SubmitResearchRequest": lambda: consent_pb2.SubmitResearchRequestRequest(
            research_request=research_request_example(later), request_id=new_ulid()
        ),
        # Ids nobody filed: an admitted caller is answered NOT_FOUND by the committee desk.
        "GetResearchRequest": lambda: consent_pb2.GetResearchRequestRequest(
            name=f"researchRequests/{new_ulid()}"
        ),
        "ListResearchRequests": consent_pb2.ListResearchRequestsRequest,
        "CastCommitteeVote": lambda: consent_pb2.CastCommitteeVoteRequest(
            name=f"researchRequests/{new_ulid()}", choice=consent_pb2.VOTE_CHOICE_APPROVE
        ),
        "GetResearchGrant": lambda: consent_pb2.GetResearchGrantRequest(
            name=f"researchGrants/{new_ulid()}"
        ),
        "SpendPrivacyBudget": lambda: consent_pb2.SpendPrivacyBudgetRequest(
            grant_name=f"researchGrants/{new_ulid()}", epsilon=0.1, query_id=new_ulid()
        ),
        "GetHistory": lambda: record_lookup_pb2.GetHistoryRequest(parent=parent),
        "GetHistoryPages": lambda: record_lookup_pb2.GetHistoryRequest(parent=parent),
        "GetImage": lambda: record_lookup_pb2.GetImageRequest(
            name=f"{parent}/records/01ARZ3NDEKTSV4RRFFQ69G5FAV"
        ),
        "FindRecentExams": lambda: record_lookup_pb2.FindRecentExamsRequest(
            parent=parent, modality="CT", body_site="head", window_days=90
        ),
        "GetEmergencySummary": lambda: record_lookup_pb2.GetEmergencySummaryRequest(
            national_id=person.national_id, justification=JUSTIFICATION
        ),
        "PutBlob": lambda: archive_pb2.PutBlobRequest(
            person_token=token, content_type="application/dicom", content=b"sealed-bytes"
        ),
        "GetBlob": lambda: archive_pb2.GetBlobRequest(name=stack.blob_name),
        # A cutoff before any record: nothing moves, so reads stay as seeded.
        "TierRecords": lambda: archive_pb2.TierRecordsRequest(
            cutoff=ts(datetime(1990, 1, 1, tzinfo=UTC))
        ),
        "FetchRecords": lambda: archive_pb2.FetchRecordsRequest(person_token=token),
        "AppendEvent": lambda: audit_pb2.AppendEventRequest(event=_access_event(token)),
        "AppendEvents": lambda: audit_pb2.AppendEventsRequest(events=[_access_event(token)]),
        "GetTreeHead": audit_pb2.GetTreeHeadRequest,
        "GetInclusionProof": lambda: audit_pb2.GetInclusionProofRequest(leaf_index=0),
        "GetConsistencyProof": lambda: audit_pb2.GetConsistencyProofRequest(first_tree_size=1),
        "GetEntries": lambda: audit_pb2.GetEntriesRequest(start_index=0, end_index=1),
        "ListAccessEvents": lambda: audit_pb2.ListAccessEventsRequest(parent=parent),
        "GetForecast": lambda: ai_alert_pb2.GetForecastRequest(horizon_days=7),
        # The alert stream never ends by itself: an admitted caller is answered
        # INVALID_ARGUMENT (history_days 6), after the table let it through.
        "WatchAlerts": lambda: ai_alert_pb2.WatchAlertsRequest(horizon_days=7, history_days=6),
        "GetPersonalInsights": lambda: ai_alert_pb2.GetPersonalInsightsRequest(parent=parent),
        # A grant nobody holds: an admitted researcher is answered NOT_FOUND by consent.
        "RunAggregate": lambda: ai_alert_pb2.RunAggregateRequest(
            grant_name=f"researchGrants/{new_ulid()}",
            spec=ai_alert_pb2.AggregateSpec(kind=ai_alert_pb2.AGGREGATE_KIND_COUNT),
            query_id=new_ulid(),
        ),
        "Synthesize": lambda: ai_alert_pb2.SynthesizeRequest(
            grant_name=f"researchGrants/{new_ulid()}"
        ),
    }
    requests["SubmitStream"] = requests["Submit"]
    return requests[name]()


def _access_event(person_token: str) -> audit_pb2.AccessEvent:
    event = audit_pb2.AccessEvent(
        event_id=new_ulid(),
        actor=principal_to_proto(PRINCIPALS["clinician:own-hospital"]),  # type: ignore[arg-type]
        action=audit_pb2.ACTION_READ_HISTORY,
        person_token=person_token,
        basis="GRANT",
    )
    event.occur_time.FromDatetime(datetime.now(UTC))
    return event


async def _open_stack(
    exits: AsyncExitStack, settings: Settings, consent_clock: ConsentClock, pki_dir: Path
) -> RunningServices:
    """The seven services, each serving and dialing with its own certificate (mTLS)."""
    running = RunningServices(exits, pki_dir=pki_dir)
    for name, opener in (("audit", open_audit), ("archive", open_archive)):
        await running.start(name, opener(running.settings_of(name, settings)))
    # Consent and identity record their changes and reads in audit, started above.
    await running.start(
        "consent",
        open_consent(
            running.settings_of("consent", settings),
            now=consent_clock,
            clients=running.clients(settings, "consent"),
        ),
    )
    await running.start(
        "identity",
        open_identity(
            running.settings_of("identity", settings),
            clients=running.clients(settings, "identity"),
        ),
    )
    for name, opener in (
        ("ingest", open_ingest),
        ("record-lookup", open_record_lookup),
        ("ai-alert", open_ai_alert),
    ):
        await running.start(
            name,
            opener(running.settings_of(name, settings), clients=running.clients(settings, name)),
        )
    return running


async def _seed(stack: Stack) -> None:
    """Hospital A's engine submits the person's history; the patient grants hospital A and
    a revocable grant; ingest stores a blob; hospital A's emergency physician breaks the
    glass."""
    engine = PRINCIPALS["engine:own-hospital"]
    submit = _request(stack, "/healthbank.ingest.v1.IngestService/Submit")
    (ack,) = await stack.call("/healthbank.ingest.v1.IngestService/Submit", submit, engine)
    stack.person_token = ack.person_token
    patient = stack.principal(OWN_PATIENT)
    parent = f"persons/{stack.person_token}"
    later = ts(datetime.now(UTC).replace(microsecond=0) + timedelta(days=30))
    grants: list[consent_pb2.Grant] = []
    for hospital in (HOSPITAL_A, "hospital-r"):
        (grant,) = await stack.call(
            "/healthbank.consent.v1.ConsentService/CreateGrant",
            consent_pb2.CreateGrantRequest(
                parent=parent,
                grant=consent_pb2.Grant(grantee_hospital_id=hospital, expire_time=later),
                request_id=new_ulid(),
            ),
            patient,
        )
        grants.append(grant)
    stack.revocable_grant = grants[1].name
    put_blob = "/healthbank.archive.v1.ArchiveService/PutBlob"
    (blob,) = await stack.call(
        put_blob, _request(stack, put_blob), PRINCIPALS[f"service:{authz.INGEST}"]
    )
    stack.blob_name = blob.name
    await stack.call(
        "/healthbank.consent.v1.ConsentService/BreakGlass",
        _request(stack, "/healthbank.consent.v1.ConsentService/BreakGlass"),
        PRINCIPALS["emergency:own-hospital"],
    )


@pytest.fixture(
    scope="module", params=["embedded", pytest.param("real", marks=pytest.mark.engines)]
)
async def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """The seven services over real gRPC, seeded; on SQLite, or on the real Cassandra."""
    env: dict[str, str] = {}
    if request.param == "real":
        env = cassandra_env(
            request.getfixturevalue("engines"),
            request.getfixturevalue("module_keyspace_prefix"),
        )
    settings = service_settings(tmp_path_factory.mktemp(f"matrix-{request.param}"), env)
    # Schema first, as deployed (ADR 35): the seven services' keyspaces (none on SQLite).
    await asyncio.to_thread(migrate_for, settings)
    async with AsyncExitStack() as exits:
        consent_clock = ConsentClock()
        pki_dir = tmp_path_factory.mktemp(f"matrix-pki-{request.param}")
        running = await _open_stack(exits, settings, consent_clock, pki_dir)
        seeded = Stack(settings, running, synthetic.fresh_patient(), consent_clock)
        await _seed(seeded)
        yield seeded


async def _outcome(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        details = error_details(error)
        return details.code, details.reason
    return grpc.StatusCode.OK, ""


MATRIX = [(method, caller) for method in RPCS for caller in CALLERS]


@pytest.mark.parametrize(
    ("method", "caller"), MATRIX, ids=[f"{m.split('/')[-1]}-{c}" for m, c in MATRIX]
)
async def test_every_principal_calling_every_rpc_gets_the_tables_decision(
    stack: Stack, method: str, caller: str
) -> None:
    principal = stack.principal(caller)
    request = _request(stack, method)
    code, reason = await _outcome(stack.call(method, request, principal))
    if (
        principal is not None
        and principal.kind == PK.SERVICE
        and principal.subject not in INTERNAL_SERVICES
    ):
        # No certificate names an unknown service: over mTLS its token is refused at the
        # door, before the table (even for public methods: a token sent is a token checked).
        assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "PEER_MISMATCH")
        return
    refused = refusal(method, principal, request)
    if refused is not None:
        expected = (
            grpc.StatusCode.UNAUTHENTICATED
            if principal is None
            else grpc.StatusCode.PERMISSION_DENIED
        )
        assert (code, reason) == (expected, refused.reason)
        return
    # Admitted: the call does its work (or refuses bad input), never an internal error.
    assert code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INTERNAL), reason
    if principal is not None and (method, principal.kind) in CONSENT_DECIDES:
        assert reason not in TABLE_REASONS, (code, reason)
    else:
        assert code != grpc.StatusCode.PERMISSION_DENIED, reason


def test_the_matrix_covers_every_rpc_and_principal_kind() -> None:
    assert set(RPCS) <= set(AUTHORIZATION_TABLE)
    kinds = {p.kind for p in PRINCIPALS.values() if p is not None} | {PK.PATIENT}
    assert kinds == set(PrincipalKind)
    assert len(MATRIX) >= 300


SUBMIT_METHODS = [m for m in RPCS if m.rsplit("/", 1)[1] in {"Submit", "SubmitStream"}]
SUBMITTERS = ["engine:own-hospital", "engine:other-hospital"]


@pytest.mark.parametrize("method", SUBMIT_METHODS)
@pytest.mark.parametrize("caller", SUBMITTERS)
@pytest.mark.parametrize("hospital_id", [HOSPITAL_A, HOSPITAL_B])
async def test_an_engine_submits_for_its_own_hospital_only(
    stack: Stack, method: str, caller: str, hospital_id: str
) -> None:
    principal = stack.principal(caller)
    assert principal is not None
    request = _request(stack, method, hospital_id=hospital_id)
    code, reason = await _outcome(stack.call(method, request, principal))
    if principal.hospital_id == hospital_id:
        assert code != grpc.StatusCode.PERMISSION_DENIED, reason
    else:
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "HOSPITAL_MISMATCH")


# --- reads of records: what consent decides once the table admitted the caller ------------

GET_HISTORY = "/healthbank.record_lookup.v1.RecordLookupService/GetHistory"
INSIGHTS = "/healthbank.ai_alert.v1.AiAlertService/GetPersonalInsights"
CREATE_GRANT = "/healthbank.consent.v1.ConsentService/CreateGrant"
REVOKE_GRANT = "/healthbank.consent.v1.ConsentService/RevokeGrant"
ALLERGY = common_pb2.RECORD_CATEGORY_ALLERGY
CONDITION = common_pb2.RECORD_CATEGORY_CONDITION
OBSERVATION = common_pb2.RECORD_CATEGORY_OBSERVATION

# Each case: the grant state of a fresh hospital, and what consent answers its clinician.
GRANT_CASES = {
    "no-grant": "NO_GRANT",
    "grant": "",
    "expired-grant": "GRANT_EXPIRED",
    "revoked-grant": "GRANT_REVOKED",
    "grant-to-another-clinician": "NO_GRANT",
    "grant-of-other-categories": "CATEGORY_NOT_GRANTED",
}


async def _grant(
    stack: Stack,
    hospital: str,
    *,
    clinician: str = "",
    categories: tuple[int, ...] = (),
    expire_time: datetime | None = None,
) -> str:
    """A grant of the seeded person to ``hospital`` (and ``clinician``), made by the person."""
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    grant = consent_pb2.Grant(
        grantee_hospital_id=hospital,
        grantee_clinician_id=clinician,
        expire_time=ts(expire_time or later),
        categories=categories,  # type: ignore[arg-type]
    )
    (created,) = await stack.call(
        CREATE_GRANT,
        consent_pb2.CreateGrantRequest(
            parent=f"persons/{stack.person_token}", grant=grant, request_id=new_ulid()
        ),
        stack.principal(OWN_PATIENT),
    )
    return str(created.name)


async def _arrange(stack: Stack, case: str, hospital: str, category: int) -> None:
    """Put the grants of ``case`` in place for ``hospital``'s clinician dr-1."""
    if case == "grant":
        await _grant(stack, hospital)
    elif case == "expired-grant":
        # Made an hour ago, by consent's clock, to expire half an hour ago.
        now = datetime.now(UTC).replace(microsecond=0)
        stack.consent_clock.offset = timedelta(hours=-1)
        try:
            await _grant(stack, hospital, expire_time=now - timedelta(minutes=30))
        finally:
            stack.consent_clock.offset = timedelta()
    elif case == "revoked-grant":
        name = await _grant(stack, hospital)
        await stack.call(
            REVOKE_GRANT, consent_pb2.RevokeGrantRequest(name=name), stack.principal(OWN_PATIENT)
        )
    elif case == "grant-to-another-clinician":
        await _grant(stack, hospital, clinician="dr-2")
    elif case == "grant-of-other-categories":
        other = ALLERGY if category != ALLERGY else CONDITION
        await _grant(stack, hospital, categories=(other,))


@pytest.mark.parametrize("case", list(GRANT_CASES))
@pytest.mark.parametrize("method", [GET_HISTORY, INSIGHTS])
async def test_a_clinicians_read_is_decided_by_the_grant(
    stack: Stack, method: str, case: str
) -> None:
    hospital = f"hospital-{case}-{method.rsplit('/', 1)[1].lower()}"
    category = OBSERVATION if method == INSIGHTS else CONDITION
    await _arrange(stack, case, hospital, category)
    request = _request(stack, method)
    if method == GET_HISTORY:
        request.categories.append(category)
    clinician = Principal(PK.CLINICIAN, "dr-1", hospital)
    code, reason = await _outcome(stack.call(method, request, clinician))
    denied_basis = GRANT_CASES[case]
    if denied_basis:
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, denied_basis)
    else:
        assert code == grpc.StatusCode.OK, reason


async def test_break_glass_admits_the_emergency_physician_who_broke_it_only(stack: Stack) -> None:
    request = _request(stack, GET_HISTORY)
    # A hospital the person granted nothing: only the broken glass admits a read.
    physician = Principal(PK.EMERGENCY, "er-7", "hospital-er", purpose=Purpose.EMERGENCY)
    colleague = Principal(PK.EMERGENCY, "er-8", "hospital-er", purpose=Purpose.EMERGENCY)
    before = await _outcome(stack.call(GET_HISTORY, request, physician))
    assert before == (grpc.StatusCode.PERMISSION_DENIED, "NO_GRANT")
    await stack.call(
        "/healthbank.consent.v1.ConsentService/BreakGlass",
        _request(stack, "/healthbank.consent.v1.ConsentService/BreakGlass"),
        physician,
    )
    assert (await _outcome(stack.call(GET_HISTORY, request, physician)))[0] == grpc.StatusCode.OK
    after = await _outcome(stack.call(GET_HISTORY, request, colleague))
    assert after == (grpc.StatusCode.PERMISSION_DENIED, "NO_GRANT")


# --- a hospital engine submits its own hospital's messages and does nothing else ---------

ENGINE = "engine:own-hospital"


async def _engine_refused(stack: Stack, method: str, request: Any | None = None) -> None:
    """``method`` as hospital A's engine: PERMISSION_DENIED, naming no identifier."""
    call = stack.call(method, request or _request(stack, method), stack.principal(ENGINE))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    details = error_details(raised.value)
    assert (details.code, details.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "PRINCIPAL_KIND_NOT_ALLOWED",
    )
    for identifier in (stack.person_token, stack.person.national_id, HOSPITAL_A):
        assert identifier not in details.message


async def _grants_of_the_person(stack: Stack) -> list[consent_pb2.Grant]:
    (page,) = await stack.call(
        "/healthbank.consent.v1.ConsentService/ListGrants",
        consent_pb2.ListGrantsRequest(parent=f"persons/{stack.person_token}", page_size=100),
        stack.principal(OWN_PATIENT),
    )
    return list(page.grants)


async def test_an_engine_submits_its_own_hospitals_messages(stack: Stack) -> None:
    method = "/healthbank.ingest.v1.IngestService/Submit"
    (ack,) = await stack.call(method, _request(stack, method), stack.principal(ENGINE))
    assert ack.person_token == stack.person_token


async def test_an_engine_may_not_submit_for_another_hospital(stack: Stack) -> None:
    method = "/healthbank.ingest.v1.IngestService/Submit"
    request = _request(stack, method, hospital_id=HOSPITAL_B)
    request.message_id = "engine-a-posing-as-b"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stack.call(method, request, stack.principal(ENGINE))
    assert error_details(raised.value).reason == "HOSPITAL_MISMATCH"
    # Nothing was stored: hospital B's own engine later stores that message id afresh.
    (ack,) = await stack.call(method, request, stack.principal("engine:other-hospital"))
    assert ack.outcome == ingest_pb2.OUTCOME_STORED


async def test_an_engine_may_not_create_consent(stack: Stack) -> None:
    before = await _grants_of_the_person(stack)
    grant_to_itself = consent_pb2.CreateGrantRequest(
        parent=f"persons/{stack.person_token}",
        grant=consent_pb2.Grant(
            grantee_hospital_id=HOSPITAL_B,
            expire_time=ts(datetime.now(UTC).replace(microsecond=0) + timedelta(days=3650)),
        ),
        request_id=new_ulid(),
    )
    await _engine_refused(stack, CREATE_GRANT, grant_to_itself)
    assert await _grants_of_the_person(stack) == before


async def test_an_engine_may_not_revoke_consent(stack: Stack) -> None:
    name = await _grant(stack, "hospital-kept")
    await _engine_refused(stack, REVOKE_GRANT, consent_pb2.RevokeGrantRequest(name=name))
    (kept,) = [grant for grant in await _grants_of_the_person(stack) if grant.name == name]
    assert not kept.HasField("revoke_time")


@pytest.mark.parametrize("rpc", ["Resolve", "LookupByNationalId", "GetPerson"])
async def test_an_engine_may_not_look_up_identities(stack: Stack, rpc: str) -> None:
    await _engine_refused(stack, f"/healthbank.identity.v1.IdentityService/{rpc}")


async def test_an_engine_may_not_tier_records(stack: Stack) -> None:
    await _engine_refused(stack, "/healthbank.archive.v1.ArchiveService/TierRecords")


@pytest.mark.parametrize("rpc", ["FetchRecords", "GetBlob"])
async def test_an_engine_may_not_read_the_archive(stack: Stack, rpc: str) -> None:
    await _engine_refused(stack, f"/healthbank.archive.v1.ArchiveService/{rpc}")


async def test_an_engine_may_not_read_a_history(stack: Stack) -> None:
    await _engine_refused(stack, GET_HISTORY)


async def test_an_engine_may_not_append_audit_events(stack: Stack) -> None:
    head = "/healthbank.audit.v1.AuditService/GetTreeHead"
    (before,) = await stack.call(head, audit_pb2.GetTreeHeadRequest(), None)
    await _engine_refused(stack, "/healthbank.audit.v1.AuditService/AppendEvent")
    (after,) = await stack.call(head, audit_pb2.GetTreeHeadRequest(), None)
    assert after.tree_size == before.tree_size


async def test_an_engine_may_not_list_accesses(stack: Stack) -> None:
    await _engine_refused(stack, "/healthbank.audit.v1.AuditService/ListAccessEvents")


async def test_a_refused_stream_is_refused_as_such_every_time(stack: Stack) -> None:
    # The refusal waits for the first message: sent while the client is still writing, it
    # reached grpc.aio clients as INTERNAL about once in fifty calls on a busy machine.
    method = "/healthbank.ingest.v1.IngestService/SubmitStream"
    request = _request(stack, method)
    unauthenticated = refusal(method, None, request)
    assert unauthenticated is not None
    for principal, expected in (
        (PRINCIPALS["service:audit"], (grpc.StatusCode.PERMISSION_DENIED, "SERVICE_NOT_ALLOWED")),
        (None, (grpc.StatusCode.UNAUTHENTICATED, unauthenticated.reason)),
    ):
        outcomes = {await _outcome(stack.call(method, request, principal)) for _ in range(500)}
        assert outcomes == {expected}
