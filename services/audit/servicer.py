"""The gRPC edge of the audit service: authorization, request validation, proto conversion."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import grpc  # type: ignore[import-untyped, unused-ignore]
from google.protobuf import timestamp_pb2

from healthbank.audit.v1 import audit_pb2, audit_pb2_grpc
from healthbank.contracts.names import (
    PERSON_NAME_RULE,
    PERSON_TOKEN_RULE,
    is_person_token,
    owning_person_token,
    parse_person_name,
)
from healthbank.contracts.principal import InvalidPrincipal, PrincipalKind, principal_from_proto
from healthbank.core.ids import is_ulid
from healthbank.core.telemetry import business_metrics
from healthbank.ledger import merkle
from healthbank.rpc import ServiceError, Violations, require_principal
from healthbank.rpc.authz import services_calling
from services.audit.log import (
    AuditLog,
    EventIdConflict,
    InvalidPageToken,
    TreeRangeError,
    decode_page_token,
    encode_page_token,
)
from services.audit.store import PersonCursor

DEFAULT_PAGE_SIZE = 100
MAX_EVENTS_PER_CALL = 1000
MAX_PAGE_SIZE = 500

_MAX_RESOURCE_NAMES = 1000
_MAX_RESOURCE_NAME_LENGTH = 512
_MAX_SHORT_TEXT = 128

# google.protobuf.Timestamp's valid range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799
_KNOWN_ACTIONS = frozenset(audit_pb2.Action.values()) - {audit_pb2.ACTION_UNSPECIFIED}

T = TypeVar("T")


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):  # type: ignore[misc, unused-ignore]
    """healthbank.audit.v1.AuditService over an :class:`AuditLog`."""

    def __init__(self, log: AuditLog) -> None:
        """Serve ``log``."""
        self._log = log

    async def AppendEvent(
        self, request: audit_pb2.AppendEventRequest, context: Any
    ) -> audit_pb2.AppendEventResponse:
        """Append an access event (callers: services only). Idempotent by event_id."""
        principal = require_principal()
        event = validated_event(request, principal.subject)
        try:
            appended = await self._log.append(event)
            business_metrics().audit_appends.add(1)
        except EventIdConflict:
            raise ServiceError.already_exists(
                "event_id is already logged with different content", reason="EVENT_ID_CONFLICT"
            ) from None
        return audit_pb2.AppendEventResponse(
            leaf_index=appended.leaf_index,
            leaf_hash=appended.leaf_hash,
            tree_size=appended.tree_size,
        )

    async def AppendEvents(
        self, request: audit_pb2.AppendEventsRequest, context: Any
    ) -> audit_pb2.AppendEventsResponse:
        """Append many events (callers: services only); all valid, or none appended."""
        principal = require_principal()
        violations = Violations()
        events: list[audit_pb2.AccessEvent] = []
        if violations.check(
            0 < len(request.events) <= MAX_EVENTS_PER_CALL,
            "events",
            f"must hold 1 to {MAX_EVENTS_PER_CALL} events",
        ):
            for position, event in enumerate(request.events):
                try:
                    single = audit_pb2.AppendEventRequest(event=event)
                    events.append(validated_event(single, principal.subject))
                except ServiceError as invalid:
                    if invalid.code != grpc.StatusCode.INVALID_ARGUMENT:
                        raise
                    for field, rule in invalid.field_violations:
                        violations.add(f"events[{position}]{field.removeprefix('event')}", rule)
        violations.raise_if_any()
        try:
            appended = await self._log.append_many(events)
            business_metrics().audit_appends.add(len(events))
        except EventIdConflict:
            raise ServiceError.already_exists(
                "an event_id is already logged with different content", reason="EVENT_ID_CONFLICT"
            ) from None
        return audit_pb2.AppendEventsResponse(
            results=[
                audit_pb2.AppendEventResponse(
                    leaf_index=one.leaf_index, leaf_hash=one.leaf_hash, tree_size=one.tree_size
                )
                for one in appended
            ]
        )

    async def GetTreeHead(
        self, request: audit_pb2.GetTreeHeadRequest, context: Any
    ) -> audit_pb2.SignedTreeHead:
        """The latest signed tree head (public: no PHI)."""
        head = await _guard(self._log.tree_head())
        timestamp = timestamp_pb2.Timestamp()
        timestamp.FromDatetime(head.timestamp)
        return audit_pb2.SignedTreeHead(
            tree_size=head.tree_size,
            root_hash=head.root_hash,
            timestamp=timestamp,
            signature=head.signature,
            public_key=head.public_key,
        )

    async def GetInclusionProof(
        self, request: audit_pb2.GetInclusionProofRequest, context: Any
    ) -> audit_pb2.GetInclusionProofResponse:
        """Audit path of a leaf (callers: see the authorization table)."""
        violations = Violations()
        violations.check(request.leaf_index >= 0, "leaf_index", "must be >= 0")
        if (
            violations.check(
                request.tree_size >= 0, "tree_size", "must be >= 0 (0 means the current size)"
            )
            and request.tree_size > 0
        ):
            violations.check(
                request.leaf_index < request.tree_size, "leaf_index", "must be less than tree_size"
            )
        violations.raise_if_any()
        proof = await _guard(self._log.inclusion_proof(request.leaf_index, request.tree_size))
        return audit_pb2.GetInclusionProofResponse(
            leaf_index=proof.leaf_index,
            tree_size=proof.tree_size,
            leaf_hash=proof.leaf_hash,
            audit_path=proof.audit_path,
        )

    async def GetConsistencyProof(
        self, request: audit_pb2.GetConsistencyProofRequest, context: Any
    ) -> audit_pb2.GetConsistencyProofResponse:
        """Proof that a smaller tree is a prefix of a larger one (public)."""
        violations = Violations()
        violations.check(request.first_tree_size >= 1, "first_tree_size", "must be >= 1")
        if (
            violations.check(
                request.second_tree_size >= 0,
                "second_tree_size",
                "must be >= 0 (0 means the current size)",
            )
            and request.second_tree_size > 0
        ):
            violations.check(
                request.first_tree_size <= request.second_tree_size,
                "first_tree_size",
                "must not exceed second_tree_size",
            )
        violations.raise_if_any()
        proof = await _guard(
            self._log.consistency_proof(request.first_tree_size, request.second_tree_size)
        )
        return audit_pb2.GetConsistencyProofResponse(
            first_tree_size=proof.first_tree_size,
            second_tree_size=proof.second_tree_size,
            proof=proof.proof,
        )

    async def GetEntries(
        self, request: audit_pb2.GetEntriesRequest, context: Any
    ) -> audit_pb2.GetEntriesResponse:
        """The log's entries of a leaf range, with contents, for verifiers.

        Callers: auditors, privacy officers and committee members (the authorization table).
        """
        violations = Violations()
        violations.check(request.start_index >= 0, "start_index", "must be >= 0")
        violations.check(
            request.end_index > request.start_index, "end_index", "must be greater than start_index"
        )
        violations.raise_if_any()
        entries = await _guard(self._log.entries(request.start_index, request.end_index))
        return audit_pb2.GetEntriesResponse(
            entries=[
                audit_pb2.LogEntry(leaf_index=entry.leaf_index, event=entry.event, leaf=entry.leaf)
                for entry in entries
            ]
        )

    async def ListAccessEvents(
        self, request: audit_pb2.ListAccessEventsRequest, context: Any
    ) -> audit_pb2.ListAccessEventsResponse:
        """A person's access history, newest first.

        Callers (the authorization table): the patient themself, auditors, privacy officers
        and committee members.
        """
        violations = Violations()
        person_token = (
            violations.parse(request.parent, "parent", parse_person_name, PERSON_NAME_RULE) or ""
        )
        violations.check(
            0 <= request.page_size <= MAX_PAGE_SIZE,
            "page_size",
            f"must be between 0 and {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})",
        )
        cursor: PersonCursor | None = None
        if request.page_token and not violations:
            try:
                cursor = decode_page_token(request.page_token, person_token)
            except InvalidPageToken:
                violations.add("page_token", "must be a token returned for this parent")
        violations.raise_if_any()
        page = await _guard(
            self._log.list_events(person_token, request.page_size or DEFAULT_PAGE_SIZE, cursor)
        )
        return audit_pb2.ListAccessEventsResponse(
            events=[
                audit_pb2.LoggedEvent(event=logged.event, leaf_index=logged.leaf_index)
                for logged in page.events
            ],
            next_page_token=(
                encode_page_token(person_token, page.next_cursor) if page.next_cursor else ""
            ),
        )


def validated_event(
    request: audit_pb2.AppendEventRequest, calling_service: str
) -> audit_pb2.AccessEvent:
    """The event to log: validated, with ``recorded_by`` set to the calling service.

    The recorder is the authenticated caller, never the body: ``recorded_by`` is set to
    ``calling_service`` (another value is refused). ``actor`` is the principal the calling
    service acted for, as that service asserts it; an internal service as actor (kind
    SERVICE) must be the calling service itself or a service the authorization table lets
    call it (identity records which service looked a national ID up); any other service
    cannot be named.
    Raises INVALID_ARGUMENT listing every problem.
    """
    violations = Violations()
    if not request.HasField("event"):
        violations.add("event", "is required")
        violations.raise_if_any()
    event = request.event
    if violations.require(event.event_id, "event.event_id"):
        violations.check(
            is_ulid(event.event_id), "event.event_id", "must be a ULID (26 Crockford base32)"
        )
    if violations.check(event.HasField("actor"), "event.actor", "is required"):
        try:
            actor = principal_from_proto(event.actor)
        except InvalidPrincipal as invalid:
            for field, rule in invalid.violations:
                violations.add(f"event.actor.{field}", rule)
        else:
            violations.check(
                actor.kind != PrincipalKind.SERVICE
                or actor.subject == calling_service
                or actor.subject in services_calling(calling_service),
                "event.actor.subject",
                "an actor of kind SERVICE must be the calling service or a service that calls it",
            )
    violations.check(event.action in _KNOWN_ACTIONS, "event.action", "is required")
    if violations.require(event.person_token, "event.person_token"):
        violations.check(
            is_person_token(event.person_token), "event.person_token", PERSON_TOKEN_RULE
        )
    if violations.check(event.HasField("occur_time"), "event.occur_time", "is required"):
        violations.check(
            _MIN_SECONDS <= event.occur_time.seconds <= _MAX_SECONDS
            and 0 <= event.occur_time.nanos < 1_000_000_000,
            "event.occur_time",
            "must be a valid timestamp",
        )
    violations.check(
        len(event.resource_names) <= _MAX_RESOURCE_NAMES,
        "event.resource_names",
        f"must hold at most {_MAX_RESOURCE_NAMES} names",
    )
    if violations.check(
        all(0 < len(name) <= _MAX_RESOURCE_NAME_LENGTH for name in event.resource_names),
        "event.resource_names",
        f"each name must be 1 to {_MAX_RESOURCE_NAME_LENGTH} characters",
    ):
        # The ledger lists accesses per person: an event must not name another's resources.
        violations.check(
            all(owning_person_token(name) == event.person_token for name in event.resource_names),
            "event.resource_names",
            "each name must be persons/{person_token} of the event or a resource under it",
        )
    violations.check(
        len(event.basis) <= _MAX_SHORT_TEXT,
        "event.basis",
        f"must be at most {_MAX_SHORT_TEXT} characters",
    )
    violations.check(
        event.recorded_by in ("", calling_service),
        "event.recorded_by",
        "must be empty or the calling service's name",
    )
    violations.raise_if_any()
    logged = audit_pb2.AccessEvent()
    logged.CopyFrom(event)
    # The ledger says who recorded an event; a caller cannot claim to be another service.
    logged.recorded_by = calling_service
    return logged


async def _guard(work: Awaitable[T]) -> T:
    """Await ``work``, mapping the log's domain errors to statuses."""
    try:
        return await work
    except TreeRangeError as error:
        raise ServiceError.invalid_argument(error.violations) from None
    except merkle.MissingNode:
        raise ServiceError(
            grpc.StatusCode.DATA_LOSS,
            "the audit log's node table is damaged",
            reason="MERKLE_NODE_MISSING",
        ) from None
