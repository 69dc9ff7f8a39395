"""Who may call which RPC: the one authorization table, and the decision it makes.

Every RPC of every healthbank service has an entry in :data:`AUTHORIZATION_TABLE`, keyed by
its full gRPC method name. An entry lists the principal kinds that may call it, each with a
scope, and for ``SERVICE`` principals the services (by name) the architecture's call graph
lets call it. A method without an entry is refused (deny by default). The
server interceptor (:class:`healthbank.rpc.interceptors.CallInterceptor`) applies
the table to every call, after verifying the token and before the servicer runs; scopes
that need the request are checked there too, per message for request streams.

Refusals are PERMISSION_DENIED with a reason code and a message naming only kinds and
rules, never a subject, hospital or person. ``docs/authorization.md`` is generated from the
table (``python tools/authz_doc.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from healthbank.contracts.names import owning_person_token
from healthbank.contracts.principal import Principal, PrincipalKind
from healthbank.rpc.errors import ServiceError

__all__ = [
    "ANY",
    "AUTHORIZATION_TABLE",
    "HOSPITAL_BOUND",
    "INTERNAL_SERVICES",
    "TABLE_REASONS",
    "AuthorizationTable",
    "MethodRule",
    "Refusal",
    "Scope",
    "authorization_markdown",
    "check_call",
    "check_request",
    "refusal",
    "services_calling",
    "with_public_methods",
]

# Service names as each service's app.py calls itself (its SERVICE principal's subject).
INGEST = "ingest"
IDENTITY = "identity"
CONSENT = "consent"
RECORD_LOOKUP = "record-lookup"
ARCHIVE = "archive"
AUDIT = "audit"
AI_ALERT = "ai-alert"
ARCHIVE_TIERING = "archive-tiering"  # the scheduled job that moves records to the cold tier
INTERNAL_SERVICES = (
    INGEST,
    IDENTITY,
    CONSENT,
    RECORD_LOOKUP,
    ARCHIVE,
    AUDIT,
    AI_ALERT,
    ARCHIVE_TIERING,
)
"""Every service name a SERVICE principal may carry in a deployment."""

CREDENTIALS_REQUIRED = "CREDENTIALS_REQUIRED"
METHOD_NOT_AUTHORIZED = "METHOD_NOT_AUTHORIZED"
PRINCIPAL_KIND_NOT_ALLOWED = "PRINCIPAL_KIND_NOT_ALLOWED"
SERVICE_NOT_ALLOWED = "SERVICE_NOT_ALLOWED"
HOSPITAL_REQUIRED = "HOSPITAL_REQUIRED"
HOSPITAL_MISMATCH = "HOSPITAL_MISMATCH"
NOT_DATA_SUBJECT = "NOT_DATA_SUBJECT"
TABLE_REASONS = frozenset(
    {
        CREDENTIALS_REQUIRED,
        METHOD_NOT_AUTHORIZED,
        PRINCIPAL_KIND_NOT_ALLOWED,
        SERVICE_NOT_ALLOWED,
        HOSPITAL_REQUIRED,
        HOSPITAL_MISMATCH,
        NOT_DATA_SUBJECT,
    }
)
"""Every reason code a refusal by the table carries."""


@dataclass(frozen=True)
class Refusal:
    """Why the table refuses a call: a reason code and a message free of identifiers."""

    reason: str
    message: str

    def error(self) -> ServiceError:
        """The refusal as the status the caller receives."""
        if self.reason == CREDENTIALS_REQUIRED:
            return ServiceError.unauthenticated(self.message, reason=self.reason)
        return ServiceError.permission_denied(self.message, reason=self.reason)


@dataclass(frozen=True)
class Scope:
    """What a principal of an admitted kind may touch with a call.

    ``hospital_bound``: the principal must carry a hospital. ``own_hospital``: the request
    field of that name, when set, must be the principal's hospital. ``own_person``: the
    person owning the resource named by that request field (``persons/{token}...``), when
    it parses, must be the principal's subject. Unset or malformed fields pass:
    the servicer refuses them as INVALID_ARGUMENT naming the field.
    """

    description: str
    hospital_bound: bool = False
    own_hospital: str = ""
    own_person: str = ""

    @property
    def needs_request(self) -> bool:
        """True if the scope reads the request (checked per message of a stream)."""
        return bool(self.own_hospital or self.own_person)

    def caller_refusal(self, principal: Principal) -> Refusal | None:
        """The refusal the principal earns before any request is read, if any."""
        if (self.hospital_bound or self.own_hospital) and not principal.hospital_id:
            return Refusal(
                HOSPITAL_REQUIRED, f"a {principal.kind.value} caller must be bound to a hospital"
            )
        return None

    def request_refusal(self, principal: Principal, request: Any) -> Refusal | None:
        """The refusal one request message earns, if any."""
        if self.own_hospital:
            asked = getattr(request, self.own_hospital, "")
            if asked and asked != principal.hospital_id:
                return Refusal(
                    HOSPITAL_MISMATCH,
                    f"the caller may act only for its own hospital ({self.own_hospital})",
                )
        if self.own_person:
            owner = owning_person_token(getattr(request, self.own_person, ""))
            if owner is not None and owner != principal.subject:
                return Refusal(
                    NOT_DATA_SUBJECT,
                    f"a {principal.kind.value} may act only on their own data ({self.own_person})",
                )
        return None


ANY = Scope("any")
"""No limit beyond the kind: the consent gate or the service decides what is seen."""
HOSPITAL_BOUND = Scope("hospital-bound", hospital_bound=True)
"""Clinicians and emergency staff act for a hospital; consent decides which persons."""


def _own_person(request_field: str) -> Scope:
    return Scope(f"own person ({request_field})", own_person=request_field)


def _own_hospital(request_field: str) -> Scope:
    return Scope(f"own hospital ({request_field})", own_hospital=request_field)


@dataclass(frozen=True)
class MethodRule:
    """One row of the table: who may call a method, with which scope, and why."""

    why: str
    callers: Mapping[PrincipalKind, Scope] = field(default_factory=dict)
    services: frozenset[str] = frozenset()
    public: bool = False


def _services(*names: str) -> frozenset[str]:
    return frozenset(names)


_PK = PrincipalKind
_INGEST_V1 = "/healthbank.ingest.v1.IngestService/"
_IDENTITY_V1 = "/healthbank.identity.v1.IdentityService/"
_CONSENT_V1 = "/healthbank.consent.v1.ConsentService/"
_LOOKUP_V1 = "/healthbank.record_lookup.v1.RecordLookupService/"
_ARCHIVE_V1 = "/healthbank.archive.v1.ArchiveService/"
_AUDIT_V1 = "/healthbank.audit.v1.AuditService/"
_AI_ALERT_V1 = "/healthbank.ai_alert.v1.AiAlertService/"

AUTHORIZATION_TABLE: Mapping[str, MethodRule] = {
    # --- infrastructure: probes and tooling, no data ---
    "/grpc.health.v1.Health/Check": MethodRule(
        "readiness probes carry no credentials", public=True
    ),
    "/grpc.health.v1.Health/Watch": MethodRule(
        "readiness probes carry no credentials", public=True
    ),
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": MethodRule(
        "API shape only, no data", public=True
    ),
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": MethodRule(
        "API shape only, no data", public=True
    ),
    # --- ingest: hospitals' integration engines submit their own hospital's messages ---
    _INGEST_V1 + "Submit": MethodRule(
        "an engine speaks for one hospital; submitting for another would forge its records",
        callers={_PK.HOSPITAL_ENGINE: _own_hospital("hospital_id")},
    ),
    _INGEST_V1 + "SubmitStream": MethodRule(
        "as Submit, checked for every message of the stream as it arrives",
        callers={_PK.HOSPITAL_ENGINE: _own_hospital("hospital_id")},
    ),
    # --- identity: the master patient index ---
    _IDENTITY_V1 + "Resolve": MethodRule(
        "ingest links each message's hospital patient to a person (and, for an ADT^A40, the"
        " hospital's own duplicate registrations); nobody else creates persons",
        services=_services(INGEST),
    ),
    _IDENTITY_V1 + "ResolveBatch": MethodRule(
        "Resolve for many patients at once (streams); the same caller as Resolve",
        services=_services(INGEST),
    ),
    _IDENTITY_V1 + "LookupByNationalId": MethodRule(
        "national IDs are looked up only inside record-lookup's audited break-glass flow",
        services=_services(RECORD_LOOKUP),
    ),
    _IDENTITY_V1 + "ListMergedPersons": MethodRule(
        "a history reads the records of the persons merged into its person (ADR 33); only"
        " record-lookup reads histories, and it audits each read naming every such person",
        services=_services(RECORD_LOOKUP),
    ),
    _IDENTITY_V1 + "GetPerson": MethodRule(
        "every hospital's MRNs of a person: privacy officers handle data-subject requests; "
        "no service needs them today and clinicians never get them without consent",
        callers={_PK.PRIVACY_OFFICER: ANY},
    ),
    _IDENTITY_V1 + "ListMatchReviews": MethodRule(
        "the match review queue pairs persons' tokens: privacy officers decide it (ADR 25)",
        callers={_PK.PRIVACY_OFFICER: ANY},
    ),
    _IDENTITY_V1 + "DecideMatchReview": MethodRule(
        "deciding that two registrations are one person is the privacy officer's, audited",
        callers={_PK.PRIVACY_OFFICER: ANY},
    ),
    _IDENTITY_V1 + "MergePersons": MethodRule(
        "a merge moves a person's hospital links: privacy officers only, audited first",
        callers={_PK.PRIVACY_OFFICER: ANY},
    ),
    _IDENTITY_V1 + "UnmergePersons": MethodRule(
        "undoing a merge is the privacy officer's, audited first",
        callers={_PK.PRIVACY_OFFICER: ANY},
    ),
    # --- consent: grants belong to the patient ---
    _CONSENT_V1 + "CreateGrant": MethodRule(
        "only the patient, or a proxy consent has registered for them, gives consent",
        callers={_PK.PATIENT: _own_person("parent"), _PK.PROXY: ANY},
    ),
    _CONSENT_V1 + "RevokeGrant": MethodRule(
        "only the patient, or a proxy consent has registered for them, withdraws consent",
        callers={_PK.PATIENT: _own_person("name"), _PK.PROXY: ANY},
    ),
    _CONSENT_V1 + "ListGrants": MethodRule(
        "the patient and their registered proxy see the grants (consent checks the proxy)",
        callers={_PK.PATIENT: _own_person("parent"), _PK.PROXY: ANY},
    ),
    _CONSENT_V1 + "Check": MethodRule(
        "the consent gate of the reading services asks before every read",
        services=_services(RECORD_LOOKUP, AI_ALERT),
    ),
    _CONSENT_V1 + "BreakGlass": MethodRule(
        "emergency staff of a hospital; record-lookup forwards their own token",
        callers={_PK.EMERGENCY: HOSPITAL_BOUND},
    ),
    _CONSENT_V1 + "RegisterProxy": MethodRule(
        "only the patient names who may act for them", callers={_PK.PATIENT: _own_person("parent")}
    ),
    _CONSENT_V1 + "RemoveProxy": MethodRule(
        "only the patient removes a proxy", callers={_PK.PATIENT: _own_person("name")}
    ),
    _CONSENT_V1 + "ListProxies": MethodRule(
        "the patient sees who may act for them", callers={_PK.PATIENT: _own_person("parent")}
    ),
    # --- consent: the data security committee (ADR 26) ---
    _CONSENT_V1 + "SubmitResearchRequest": MethodRule(
        "researchers ask the committee; screening and votes decide",
        callers={_PK.RESEARCHER: ANY},
    ),
    _CONSENT_V1 + "GetResearchRequest": MethodRule(
        "the committee reviews every request; a researcher sees their own (consent checks)",
        callers={_PK.COMMITTEE: ANY, _PK.RESEARCHER: ANY},
    ),
    _CONSENT_V1 + "ListResearchRequests": MethodRule(
        "the committee's docket; a researcher lists their own (consent filters)",
        callers={_PK.COMMITTEE: ANY, _PK.RESEARCHER: ANY},
    ),
    _CONSENT_V1 + "CastCommitteeVote": MethodRule(
        "only committee members vote", callers={_PK.COMMITTEE: ANY}
    ),
    _CONSENT_V1 + "GetResearchGrant": MethodRule(
        "the grant's researcher and the committee read it; the black room enforces it",
        callers={_PK.COMMITTEE: ANY, _PK.RESEARCHER: ANY},
        services=_services(AI_ALERT),
    ),
    _CONSENT_V1 + "SpendPrivacyBudget": MethodRule(
        "only the black room spends a grant's privacy budget, before it releases a result",
        services=_services(AI_ALERT),
    ),
    # --- record-lookup: reads of a person's history, through the consent gate ---
    _LOOKUP_V1 + "GetHistory": MethodRule(
        "clinicians and emergency staff under consent or break-glass; patients their own",
        callers={
            _PK.CLINICIAN: HOSPITAL_BOUND,
            _PK.EMERGENCY: HOSPITAL_BOUND,
            _PK.PATIENT: _own_person("parent"),
        },
    ),
    _LOOKUP_V1 + "GetHistoryPages": MethodRule(
        "GetHistory in pages of up to 100 records: the same readers",
        callers={
            _PK.CLINICIAN: HOSPITAL_BOUND,
            _PK.EMERGENCY: HOSPITAL_BOUND,
            _PK.PATIENT: _own_person("parent"),
        },
    ),
    _LOOKUP_V1 + "FindRecentExams": MethodRule(
        "before an order: the earlier equivalent exams, read like the history of that category",
        callers={
            _PK.CLINICIAN: HOSPITAL_BOUND,
            _PK.EMERGENCY: HOSPITAL_BOUND,
            _PK.PATIENT: _own_person("parent"),
        },
    ),
    _LOOKUP_V1 + "GetImage": MethodRule(
        "the images behind a history, read like the history: consent (imaging) or break-glass; "
        "patients their own",
        callers={
            _PK.CLINICIAN: HOSPITAL_BOUND,
            _PK.EMERGENCY: HOSPITAL_BOUND,
            _PK.PATIENT: _own_person("name"),
        },
    ),
    _LOOKUP_V1 + "GetEmergencySummary": MethodRule(
        "the break-glass flow: emergency staff of a hospital, audited and flagged",
        callers={_PK.EMERGENCY: HOSPITAL_BOUND},
    ),
    # --- archive: internal storage of sealed blobs and cold records ---
    _ARCHIVE_V1 + "PutBlob": MethodRule(
        "ingest stores the sealed images of the messages it accepts", services=_services(INGEST)
    ),
    _ARCHIVE_V1 + "GetBlob": MethodRule(
        "record-lookup reads images after the consent gate admitted the read",
        services=_services(RECORD_LOOKUP),
    ),
    _ARCHIVE_V1 + "TierRecords": MethodRule(
        "moves records between tiers: only the scheduled tiering job, never a caller that "
        "could then read what it moved",
        services=_services(ARCHIVE_TIERING),
    ),
    _ARCHIVE_V1 + "FetchRecords": MethodRule(
        "cold records, sealed, for record-lookup's admitted reads and ai-alert's consented "
        "multi-year trends (tiered years included, ADR 31)",
        services=_services(RECORD_LOOKUP, AI_ALERT),
    ),
    # --- audit: the append-only ledger ---
    _AUDIT_V1 + "AppendEvent": MethodRule(
        "only services record accesses (the ledger notes which); users and engines would "
        "forge them",
        services=_services(INGEST, IDENTITY, CONSENT, RECORD_LOOKUP, ARCHIVE, AI_ALERT),
    ),
    _AUDIT_V1 + "AppendEvents": MethodRule(
        "AppendEvent for callers with many events: the same services",
        services=_services(INGEST, IDENTITY, CONSENT, RECORD_LOOKUP, ARCHIVE, AI_ALERT),
    ),
    _AUDIT_V1 + "GetTreeHead": MethodRule(
        "signed tree heads carry no PHI; witnesses fetch them without credentials",
        public=True,
    ),
    _AUDIT_V1 + "GetConsistencyProof": MethodRule(
        "hashes only; witnesses check the log never shrank or split without credentials",
        public=True,
    ),
    _AUDIT_V1 + "GetInclusionProof": MethodRule(
        "hashes only, for those who hold an event's leaf index",
        callers={
            _PK.PATIENT: ANY,
            _PK.PROXY: ANY,
            _PK.CLINICIAN: HOSPITAL_BOUND,
            _PK.EMERGENCY: HOSPITAL_BOUND,
            _PK.AUDITOR: ANY,
            _PK.PRIVACY_OFFICER: ANY,
            _PK.COMMITTEE: ANY,
        },
    ),
    _AUDIT_V1 + "GetEntries": MethodRule(
        "whole log entries (every person's access events) for verifying the log: auditors, "
        "privacy officers and the committee; no service needs them",
        callers={_PK.AUDITOR: ANY, _PK.PRIVACY_OFFICER: ANY, _PK.COMMITTEE: ANY},
    ),
    _AUDIT_V1 + "ListAccessEvents": MethodRule(
        "who read a person's data: the patient; auditors, privacy officers and the "
        "committee reviewing break-glass; never a hospital engine",
        callers={
            _PK.PATIENT: _own_person("parent"),
            _PK.AUDITOR: ANY,
            _PK.PRIVACY_OFFICER: ANY,
            _PK.COMMITTEE: ANY,
        },
    ),
    # --- ai-alert ---
    _AI_ALERT_V1 + "GetForecast": MethodRule(
        "city-wide counts, no person: staff and researchers",
        callers={
            _PK.CLINICIAN: ANY,
            _PK.EMERGENCY: ANY,
            _PK.COMMITTEE: ANY,
            _PK.RESEARCHER: ANY,
            _PK.PRIVACY_OFFICER: ANY,
        },
    ),
    _AI_ALERT_V1 + "WatchAlerts": MethodRule(
        "the city's alert as a stream: the callers of GetForecast",
        callers={
            _PK.CLINICIAN: ANY,
            _PK.EMERGENCY: ANY,
            _PK.COMMITTEE: ANY,
            _PK.RESEARCHER: ANY,
            _PK.PRIVACY_OFFICER: ANY,
        },
    ),
    _AI_ALERT_V1 + "RunAggregate": MethodRule(
        "the black room: noisy aggregates for the researcher holding the grant (ai-alert "
        "checks the holder, consent the budget)",
        callers={_PK.RESEARCHER: ANY},
    ),
    _AI_ALERT_V1 + "Synthesize": MethodRule(
        "a synthetic cohort for the researcher holding a grant that allows it",
        callers={_PK.RESEARCHER: ANY},
    ),
    _AI_ALERT_V1 + "GetPersonalInsights": MethodRule(
        "one person's lab trends: the patient, or a clinician under consent",
        callers={_PK.PATIENT: _own_person("parent"), _PK.CLINICIAN: HOSPITAL_BOUND},
    ),
}
"""The authorization of every RPC, by full gRPC method name (``/package.Service/Method``)."""


AuthorizationTable = Mapping[str, MethodRule]


def with_public_methods(*methods: str, why: str) -> AuthorizationTable:
    """The table plus ``methods`` (full names) open to anyone: for a server that hosts a
    service of its own beside healthbank's, such as a test probe."""
    return {**AUTHORIZATION_TABLE, **dict.fromkeys(methods, MethodRule(why, public=True))}


def refusal(
    method: str,
    principal: Principal | None,
    request: Any = None,
    table: AuthorizationTable = AUTHORIZATION_TABLE,
) -> Refusal | None:
    """Why ``table`` refuses ``principal`` calling ``method`` (with ``request``, if given).

    None means admitted. Without ``request`` only what needs no request is decided.
    """
    rule = table.get(method)
    if rule is None:
        return Refusal(METHOD_NOT_AUTHORIZED, "this method is not open to any caller")
    if rule.public:
        return None
    if principal is None:
        return Refusal(CREDENTIALS_REQUIRED, "credentials required")
    if principal.kind == PrincipalKind.SERVICE:
        if principal.subject in rule.services:
            return None
        return Refusal(SERVICE_NOT_ALLOWED, "this service may not call this method")
    scope = rule.callers.get(principal.kind)
    if scope is None:
        return Refusal(
            PRINCIPAL_KIND_NOT_ALLOWED,
            f"caller kind {principal.kind.value} may not call this method",
        )
    found = scope.caller_refusal(principal)
    if found is None and request is not None:
        found = scope.request_refusal(principal, request)
    return found


def check_call(
    method: str, principal: Principal | None, table: AuthorizationTable = AUTHORIZATION_TABLE
) -> Callable[[Any], None] | None:
    """Refuse the call now if ``table`` does; else the per-message check it needs, if any.

    Raises:
        ServiceError: UNAUTHENTICATED without credentials (unless the method is public),
            PERMISSION_DENIED when the caller may not call the method.
    """
    found = refusal(method, principal, table=table)
    if found is not None:
        raise found.error()
    rule = table[method]
    if principal is None or rule.public or principal.kind == PrincipalKind.SERVICE:
        return None
    if not rule.callers[principal.kind].needs_request:
        return None
    admitted = principal

    def check_message(request: Any) -> None:
        check_request(method, admitted, request, table)

    return check_message


def check_request(
    method: str,
    principal: Principal,
    request: Any,
    table: AuthorizationTable = AUTHORIZATION_TABLE,
) -> None:
    """Refuse one request message that falls outside the principal's scope (ServiceError)."""
    found = refusal(method, principal, request, table)
    if found is not None:
        raise found.error()


def _rows() -> Iterator[tuple[str, str, str]]:
    for method, rule in AUTHORIZATION_TABLE.items():
        if rule.public:
            callers = "anyone, no credentials needed"
        else:
            parts = [f"{kind.value} ({scope.description})" for kind, scope in rule.callers.items()]
            if rule.services:
                parts.append("service: " + ", ".join(sorted(rule.services)))
            callers = "; ".join(parts)
        yield method, callers, rule.why


def authorization_markdown() -> str:
    """docs/authorization.md: the table as a reader sees it (generated, never hand-edited)."""
    lines = [
        "# Authorization: who may call which RPC",
        "",
        "Generated from `healthbank.rpc.authz.AUTHORIZATION_TABLE` by "
        "`python tools/authz_doc.py`; do not edit by hand (a unit test fails when stale).",
        "A method not listed is refused. Scopes: *hospital-bound*: the caller carries a "
        "hospital; *own hospital (field)*: that request field, when set, is the caller's "
        "hospital, for every message of a stream; *own person (field)*: the person that field "
        "names is the caller. Other kinds get PERMISSION_DENIED with a reason code; calls "
        "without credentials get UNAUTHENTICATED.",
        "",
        "| method | who may call (scope) | why |",
        "|---|---|---|",
    ]
    lines += [f"| `{method}` | {callers} | {why} |" for method, callers, why in _rows()]
    return "\n".join(lines) + "\n"


def services_calling(
    service: str, table: AuthorizationTable = AUTHORIZATION_TABLE
) -> frozenset[str]:
    """The internal services the table lets call some method of ``service``.

    ``service`` is a service's name (``identity``, ``record-lookup``): its methods are those
    of the ``healthbank.<name>.v1`` package. The audit log uses this to accept an event in
    which a service names the service it served as the actor (identity recording which
    service looked a national ID up), and no other.
    """
    prefix = f"/healthbank.{service.replace('-', '_')}.v1."
    return frozenset(
        caller
        for method, rule in table.items()
        if method.startswith(prefix)
        for caller in rule.services
    )
