"""The consent gate: the one way a reading service gets at a person's sealed clinical data.

Shared by record-lookup and ai-alert, so both decide and record access the same way::

    who may read?  the patient themself → SELF (their own data only: NOT_DATA_SUBJECT else)
                   anyone else          → consent.Check
                   an emergency actor   → consent.BreakGlass (their own session)
      ├ refused   → audit ACTION_DENIED (best effort) → PERMISSION_DENIED
      └ permitted → audit the read  ┐ concurrently (no audit, no read: the rows are
                    read the rows   ┘ dropped unopened when the audit fails)
                  → Admission → Admission.open_* decrypts them

A read permitted under a break-glass session (basis BREAK_GLASS) is flagged for review,
whether the session was opened by the emergency flow or by a direct consent.BreakGlass call
(which consent records itself, as ACTION_BREAK_GLASS). Events are appended through
:class:`healthbank.rpc.access_log.AccessLog`.

A caller may hand the gate its read of the sealed rows (``read``): it starts once consent
has permitted and runs while the access event is appended, so a read costs the longer of the
two, not their sum; nothing it fetched is returned unless the event was logged (ADR 0023).
An :class:`Admission` exists only after the access event was appended, and it opens only
the admitted person's payloads, facts and imaging blobs (the associated data names the
person), so a service cannot decrypt what it did not record. The persons merged into the
person read (ADR 33) are read under that person's consent, since they are the same human,
and each gets the access event in their own trail; the admission opens their rows too.
A payload failing authentication, or a fact that does not decode, is DATA_LOSS, never
skipped; a key provider outage is left to the error interceptor (UNAVAILABLE,
``KEY_PROVIDER_UNAVAILABLE``). Failed consent and audit calls follow the one downstream
policy (:func:`healthbank.rpc.downstream.downstream_error`).

Consent and audit are called with this service's own token (the ClientFactory's): the end
user travels in ``CheckRequest.accessor`` and ``AccessEvent.actor``. BreakGlass is the
exception: consent records who broke the glass and covers only that actor's later reads,
so it carries the inbound caller's own credentials.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NoReturn, TypeVar, cast

import grpc  # type: ignore[import-untyped, unused-ignore]

from healthbank.audit.v1 import audit_pb2
from healthbank.common.v1 import common_pb2
from healthbank.consent.v1 import consent_pb2, consent_pb2_grpc
from healthbank.contracts.facts import Fact, MalformedFact, decode_fact
from healthbank.contracts.names import person_name
from healthbank.contracts.principal import Principal, PrincipalKind, principal_to_proto
from healthbank.core.tasks import cancel_and_wait
from healthbank.crypto import Sealer, TamperedPayload
from healthbank.records.model import blob_aad, fact_aad, payload_aad
from healthbank.rpc.access_log import AccessLog
from healthbank.rpc.clients import ClientFactory, caller_metadata
from healthbank.rpc.downstream import downstream_error
from healthbank.rpc.errors import REASON_PATTERN, ServiceError

__all__ = [
    "BASIS_BREAK_GLASS",
    "BASIS_SELF",
    "Admission",
    "ConsentGate",
    "MergedPersons",
    "ReadScope",
    "RowsRead",
]

_log = logging.getLogger(__name__)

BASIS_SELF = "SELF"
"""The basis of a patient reading their own data."""

BASIS_BREAK_GLASS = "BREAK_GLASS"
"""The basis of an emergency read under a break-glass session."""

_NOT_DATA_SUBJECT = "NOT_DATA_SUBJECT"

_Rows = TypeVar("_Rows")


@dataclass(frozen=True)
class ReadScope:
    """What a permitted read may fetch: the permitted categories (empty: all asked for) of
    ``person_tokens``, the person asked about first, then those merged into them."""

    permitted_categories: frozenset[int]
    person_tokens: tuple[str, ...]


RowsRead = Callable[[ReadScope], Awaitable[_Rows]]
"""A caller's read of sealed rows, given its scope."""

MergedPersons = Callable[[], Awaitable[Sequence[str]]]
"""The persons merged into the person read (ADR 33), e.g. identity.ListMergedPersons."""


async def _nothing(scope: ReadScope) -> None:
    return None


@dataclass(frozen=True)
class Admission:
    """A permitted and audited access to one person's data; opens that person's payloads.

    ``permitted_categories`` are the categories consent allows (empty: everything asked for);
    ``authority_name`` names what permitted the read (a grant or break-glass session; "" for
    SELF); ``audit_leaf_index`` is the access event's leaf in the audit log.
    ``merged_tokens`` are the persons merged into this one (ADR 33): their rows are this
    person's too, and the ``owner`` of a sealed row may name one of them.
    """

    person_token: str
    basis: str
    permitted_categories: frozenset[int]
    authority_name: str
    audit_leaf_index: int
    _sealer: Sealer = field(repr=False)
    merged_tokens: frozenset[str] = frozenset()

    async def open_payload(self, record_id: str, sealed: bytes, owner: str = "") -> bytes:
        """The FHIR JSON of one of the person's records (``owner``: the record's person when
        it is one merged into this one)."""
        (payload,) = await self.open_payloads([(record_id, sealed, owner)])
        return payload

    async def open_payloads(self, rows: Sequence[tuple[str, bytes, str]]) -> list[bytes]:
        """:meth:`open_payload` of each ``(record_id, sealed, owner)``, in order, at once (a
        history opens a thousand)."""
        items = [
            (sealed, payload_aad(self._owner(owner), record_id))
            for record_id, sealed, owner in rows
        ]
        return await self._open_many(items)

    async def open_blob(self, sealed: bytes, owner: str = "") -> bytes:
        """The content of one of the person's imaging blobs (sealed by ingest; ``owner`` as
        for :meth:`open_payload`)."""
        return await self._open(sealed, blob_aad(self._owner(owner)))

    @property
    def persons(self) -> frozenset[str]:
        """Whose rows this admission opens: the person's own, and those of every person
        merged into them."""
        return self.merged_tokens | {self.person_token}

    async def open_fact(
        self, record_id: str, sealed: bytes, category: int, owner: str = ""
    ) -> Fact:
        """The emergency fact of one of the person's records (``category``: the store row's;
        ``owner``: the row's person when it is one merged into this one).

        A fact that does not decode is DATA_LOSS: a summary that silently dropped it could
        show green over an anaphylaxis.
        """
        document = await self._open(sealed, fact_aad(self._owner(owner), record_id))
        try:
            return decode_fact(document, category)
        except MalformedFact:
            _log.error("emergency fact of record %s is malformed", record_id)
            raise ServiceError(
                grpc.StatusCode.DATA_LOSS,
                "an emergency fact could not be read",
                reason="FACT_UNREADABLE",
            ) from None

    def _owner(self, owner: str) -> str:
        if not owner or owner == self.person_token:
            return self.person_token
        if owner not in self.merged_tokens:
            # Never open another person's row, whatever a store returned.
            raise ServiceError(
                grpc.StatusCode.DATA_LOSS,
                "a stored row belongs to another person",
                reason="ROW_OF_ANOTHER_PERSON",
            )
        return owner

    async def _open(self, sealed: bytes, aad: bytes) -> bytes:
        (opened,) = await self._open_many([(sealed, aad)])
        return opened

    async def _open_many(self, items: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
        try:
            return await self._sealer.open_many(items)
        except TamperedPayload:
            _log.error("a sealed payload of %s failed authentication", self.person_token)
            raise ServiceError(
                grpc.StatusCode.DATA_LOSS,
                "a stored payload failed its integrity check",
                reason="PAYLOAD_TAMPERED",
            ) from None


class ConsentGate:
    """Decides, records and opens reads of clinical data for the service ``service``.

    Args:
        clients: reaches "consent" and "audit" with this service's own credentials.
        sealer: opens the sealed payloads of admitted reads.
        service: the recording service (``AccessEvent.recorded_by``).
        now: the clock (UTC) stamping access events.
    """

    def __init__(
        self,
        *,
        clients: ClientFactory,
        sealer: Sealer,
        service: str,
        now: Callable[[], datetime],
    ) -> None:
        self._clients = clients
        self._sealer = sealer
        self._log = AccessLog(clients=clients, service=service, now=now)

    async def admit(
        self,
        principal: Principal,
        person_token: str,
        *,
        action: audit_pb2.Action,
        categories: Iterable[int] = (),
        resource_names: Sequence[str] = (),
        merged_persons: MergedPersons | None = None,
    ) -> Admission:
        """Let ``principal`` read ``person_token``'s records in ``categories`` (empty: all);
        ``resource_names`` (under the person) name what is read beyond the person itself.

        The same as :meth:`admit_reading` with nothing read beside the audit append.
        """
        admission, _ = await self.admit_reading(
            principal,
            person_token,
            _nothing,
            action=action,
            categories=categories,
            resource_names=resource_names,
            merged_persons=merged_persons,
        )
        return admission

    async def admit_reading(
        self,
        principal: Principal,
        person_token: str,
        read: RowsRead[_Rows],
        *,
        action: audit_pb2.Action,
        categories: Iterable[int] = (),
        resource_names: Sequence[str] = (),
        merged_persons: MergedPersons | None = None,
    ) -> tuple[Admission, _Rows]:
        """:meth:`admit`, running ``read`` (the caller's fetch of sealed rows, given the
        permitted categories and the persons whose rows they are) while the read is
        audited; both done, the admission and rows.

        ``merged_persons`` (run beside the consent decision) names the persons merged into
        this one (ADR 33): they are read under this person's consent (they are the same
        human), each gets the access event in their own trail, and the admission opens
        their rows too.

        A read under a break-glass session is flagged for review like the emergency summary,
        whichever way the session was opened.

        Raises PERMISSION_DENIED (the refusal audited, best effort; ``read`` never started),
        the error of a failed consent or audit call (UNAVAILABLE ``AUDIT_UNAVAILABLE`` when
        the read cannot be recorded; ``read`` is then cancelled), or what ``read`` raised.
        """
        requested = sorted(set(categories))
        merged_lookup = asyncio.ensure_future(merged_persons()) if merged_persons else None
        try:
            basis, authority, permitted = await self._decide(principal, person_token, requested)
            merged = tuple(await merged_lookup) if merged_lookup else ()
        except BaseException:
            if merged_lookup:
                await cancel_and_wait(merged_lookup)
            raise
        names = [person_name(person_token), *resource_names, *([authority] if authority else [])]
        leaf, rows = await _audited_while_read(
            self._log.record(
                principal,
                action,
                person_token,
                names,
                basis=basis,
                flagged_for_review=basis == BASIS_BREAK_GLASS,
                merged_tokens=merged,
            ),
            read(ReadScope(permitted, (person_token, *merged))),
        )
        admission = Admission(
            person_token, basis, permitted, authority, leaf, self._sealer, frozenset(merged)
        )
        return admission, rows

    async def _decide(
        self, principal: Principal, person_token: str, requested: Sequence[int]
    ) -> tuple[str, str, frozenset[int]]:
        """(basis, authority name, permitted categories) of a permitted read; refuses (and
        audits the refusal) otherwise."""
        # A patient is the data subject or nobody: consent would answer SELF too, but only
        # the gate can say NOT_DATA_SUBJECT, and a patient's own read needs no consent call.
        if principal.kind == PrincipalKind.PATIENT:
            if principal.subject != person_token:
                await self._refuse(
                    principal,
                    person_token,
                    _NOT_DATA_SUBJECT,
                    "patients may read only their own data",
                )
            return BASIS_SELF, "", frozenset[int]()
        decision = await self._check(principal, person_token, requested)
        if decision.decision != consent_pb2.DECISION_PERMIT:
            await self._refuse(
                principal, person_token, decision.basis, "consent does not permit this read"
            )
        permitted = frozenset(int(category) for category in decision.permitted_categories)
        return decision.basis, decision.authority_name, permitted

    async def admit_emergency(
        self,
        principal: Principal,
        person_token: str,
        justification: str,
        read: RowsRead[_Rows],
        merged_tokens: frozenset[str] = frozenset(),
    ) -> tuple[Admission, _Rows]:
        """Break the glass as ``principal`` (the inbound caller) and record the emergency
        read, flagged for review, while ``read`` (started once the session is open) fetches
        the sealed rows; raises what consent or audit answered (``read`` then never started
        or is cancelled), or what ``read`` raised. ``merged_tokens``: the persons merged into
        this one, whose rows the admission may open too."""
        stub = consent_pb2_grpc.ConsentServiceStub(self._clients.channel("consent"))
        credentials = caller_metadata()
        if not credentials:
            raise ServiceError.unauthenticated("credentials required", "CREDENTIALS_REQUIRED")
        try:
            session = await stub.BreakGlass(
                consent_pb2.BreakGlassRequest(
                    person_token=person_token, justification=justification
                ),
                metadata=credentials,
            )
        except grpc.aio.AioRpcError as error:
            raise downstream_error(error, "consent") from None
        leaf, rows = await _audited_while_read(
            self._log.record(
                principal,
                audit_pb2.ACTION_READ_EMERGENCY,
                person_token,
                [session.name, person_name(person_token)],
                basis=BASIS_BREAK_GLASS,
                flagged_for_review=True,
                merged_tokens=sorted(merged_tokens),
            ),
            read(ReadScope(frozenset(), (person_token, *sorted(merged_tokens)))),
        )
        admission = Admission(
            person_token,
            BASIS_BREAK_GLASS,
            frozenset(),
            session.name,
            leaf,
            self._sealer,
            merged_tokens,
        )
        return admission, rows

    async def _check(
        self, principal: Principal, person_token: str, categories: Sequence[int]
    ) -> consent_pb2.CheckResponse:
        stub = consent_pb2_grpc.ConsentServiceStub(self._clients.channel("consent"))
        try:
            response: consent_pb2.CheckResponse = await stub.Check(
                consent_pb2.CheckRequest(
                    person_token=person_token,
                    accessor=principal_to_proto(principal),
                    categories=cast(list[common_pb2.RecordCategory], list(categories)),
                )
            )
        except grpc.aio.AioRpcError as error:
            raise downstream_error(error, "consent") from None
        return response

    async def _refuse(
        self, principal: Principal, person_token: str, basis: str, message: str
    ) -> NoReturn:
        """Audit a refused read (a failure here does not change the refusal), then refuse."""
        try:
            await self._log.record(
                principal,
                audit_pb2.ACTION_DENIED,
                person_token,
                [person_name(person_token)],
                basis=basis,
            )
        except ServiceError:
            _log.warning("denied read of %s could not be audited", person_token)
        reason = basis if REASON_PATTERN.match(basis) else "CONSENT_DENIED"
        raise ServiceError.permission_denied(message, reason=reason)


async def _audited_while_read(audit: Awaitable[int], read: Awaitable[_Rows]) -> tuple[int, _Rows]:
    """The access event's leaf and the rows, the append and the read run concurrently.

    The audit's outcome decides first: when the append fails, the read is cancelled and its
    rows dropped, so nothing unrecorded is ever opened or returned.
    """
    appending = asyncio.ensure_future(audit)
    reading = asyncio.ensure_future(read)
    try:
        leaf = await appending
    except BaseException:
        await cancel_and_wait(reading)  # the cancelled read's outcome is moot
        raise
    return leaf, await reading
