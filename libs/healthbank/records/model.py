"""The canonical record and the hot record store contract shared by ingest,
record-lookup, archive and ai-alert.

Payloads are stored sealed (AES-256-GCM envelope, see healthbank.crypto); the
store only sees pseudonymous person tokens, codes and times. Records are named
``persons/{person_token}/records/{record_id}`` (healthbank.contracts.names).

Writes are per hospital message (``put_message``), idempotent by hospital and
message id. What a message's write guarantees depends on the backend:

- SQLite: the receipt, the records, the emergency facts and the surveillance
  cases commit in one transaction, together or not at all.
- Cassandra (no multi-partition transactions): the records and facts go in
  logged batches of at most 2 MiB each (each applied completely, if need be by
  batchlog replay, but not isolated: a reader may see part of a message while it
  is written); the last batch also carries the surveillance cases (idempotent set
  rows) and marks the receipt committed.
  So an acknowledged message has all its records and facts; an attempt that
  failed before the receipt committed may leave its records and facts readable
  with no receipt, and its retry rewrites them under the same record ids (never
  a second copy).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Protocol

from healthbank.contracts.names import record_name


def payload_aad(person_token: str, record_id: str) -> bytes:
    """Associated data binding a sealed payload to its record (moving it breaks it)."""
    return f"record:{person_token}:{record_id}".encode()


def blob_aad(person_token: str) -> bytes:
    """Associated data of a sealed imaging blob: binds it to its person (ingest seals it,
    record-lookup opens it for an admitted reader)."""
    return f"blob:{person_token}".encode()


def fact_aad(person_token: str, record_id: str) -> bytes:
    """Associated data binding a sealed emergency fact to its record."""
    return f"fact:{person_token}:{record_id}".encode()


MAX_PAYLOAD_BYTES = 3 * 1024 * 1024
"""The largest record payload (plaintext) either backend stores in the record itself: one
record must fit one Cassandra request with room to spare (ADR 18). A larger payload is
placed in the archive's blob store and the record keeps a stub pointing at it (ADR 22)."""

PLACED_PAYLOAD_CONTENT_TYPE = "application/fhir+json"
"""Content type of a blob that holds a record's payload (not an image)."""

_PLACEMENT_TAG = {"system": "urn:healthbank:payload-placement", "code": "blob"}
# A stub is a few hundred bytes; anything longer is a payload of its own.
_MAX_STUB_BYTES = 1024


def placed_payload_stub(resource: Mapping[str, Any]) -> bytes:
    """The payload a record keeps when its resource is placed in the blob store (ADR 22):
    the resource's type and id, tagged so readers fetch the whole resource from the blob
    the record names."""
    stub: dict[str, Any] = {"resourceType": str(resource.get("resourceType", ""))}
    if isinstance(resource.get("id"), str):
        stub["id"] = resource["id"]
    stub["meta"] = {"tag": [_PLACEMENT_TAG]}
    return json.dumps(stub, separators=(",", ":")).encode()


def is_placed_payload_stub(payload: bytes) -> bool:
    """Tell whether an opened payload is a :func:`placed_payload_stub`."""
    if len(payload) > _MAX_STUB_BYTES or b"urn:healthbank:payload-placement" not in payload:
        return False
    try:
        resource = json.loads(payload)
    except ValueError:
        return False
    tags = resource.get("meta", {}).get("tag") if isinstance(resource, dict) else None
    return isinstance(tags, list) and _PLACEMENT_TAG in tags


@dataclass(frozen=True)
class SurveillanceCase:
    """One ILI case (ADR 30): a person counted on a local visit day in a district and age
    band. A set member, not a counter: writing it twice changes nothing. Only the person
    token identifies anyone."""

    day: date
    district: str
    age_band: str
    person_token: str


@dataclass(frozen=True)
class StoredRecord:
    """A canonical record as stored: metadata in clear, payload sealed.

    ``category`` and ``source_format`` hold the healthbank.common.v1 enum numbers.
    """

    record_id: str
    person_token: str
    source_hospital: str
    source_format: int
    message_id: str
    source_version: str
    content_hash: str
    category: int
    code_system: str
    code: str
    code_display: str
    effective_time: datetime
    status: str
    sealed_payload: bytes
    # A factory, not ``= ""``: a plain default is a class attribute, which would answer for
    # a packed record's blob_name before __getattr__ could unpack it (ADR 63).
    blob_name: str = field(default_factory=str)

    @property
    def name(self) -> str:
        """Resource name of this record."""
        return record_name(self.person_token, self.record_id)

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> StoredRecord:
        """A record from a field → value mapping or ``(field, value)`` pairs naming every
        field (a later pair of a field overrides an earlier one), values already of the
        field's type (a store's row).

        The same record as the constructor's, built in one dict update: a frozen dataclass's
        ``__init__`` sets each field through ``object.__setattr__`` (~4 µs for 15 fields),
        and a history builds a thousand records."""
        record = object.__new__(cls)
        record.__dict__.update(fields)
        if len(record.__dict__) != _STORED_RECORD_FIELD_COUNT:
            raise ValueError("a StoredRecord needs every field, and nothing else")
        return record

    @classmethod
    def with_packed_fields(
        cls,
        fields: Mapping[str, Any],
        packed: bytes,
        unpack: Callable[[bytes], Mapping[str, Any]],
    ) -> StoredRecord:
        """A record read from a packed cell (ADR 60): ``fields`` names every field but the
        :data:`PACKED_FIELDS`, which ``unpack(packed)`` gives the first time one is read
        (ADR 63). A history shows most records without reading them, and copies ``packed``
        into its message whole (:func:`packed_fields_of`): ~3 ms less a 1,000-record read.

        Frozen like any record; ``dataclasses.replace`` makes an ordinary one."""
        record = object.__new__(cls)
        record.__dict__.update(fields)
        if len(record.__dict__) != _STORED_RECORD_FIELD_COUNT - len(PACKED_FIELDS):
            raise ValueError("a packed StoredRecord needs every field but the packed ones")
        record.__dict__[_PACKED] = (packed, unpack)
        return record

    if not TYPE_CHECKING:  # mypy would take every attribute for one of these

        def __getattr__(self, name: str) -> Any:
            # Only called for an attribute not set: a packed field not unpacked yet.
            packed = self.__dict__.get(_PACKED)
            if packed is None or name not in PACKED_FIELDS:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            cell, unpack = packed
            unpacked = unpack(cell)
            if unpacked.keys() != PACKED_FIELDS:
                raise ValueError("a packed cell must give exactly the packed fields")
            self.__dict__.update(unpacked)
            return self.__dict__[name]


PACKED_FIELDS = frozenset(
    {
        "source_hospital",
        "source_format",
        "message_id",
        "source_version",
        "content_hash",
        "category",
        "code_system",
        "code",
        "code_display",
        "status",
        "blob_name",
    }
)
"""A record's descriptive fields: what the hot store's packed cell holds (ADR 60)."""

_PACKED = "_packed"  # the instance attribute holding (cell, unpack); never a field name
_STORED_RECORD_FIELD_COUNT = len(dataclass_fields(StoredRecord))


def packed_fields_of(record: StoredRecord) -> bytes | None:
    """The packed cell a record was read with (:meth:`StoredRecord.with_packed_fields`),
    or None for a record built field by field."""
    packed = record.__dict__.get(_PACKED)
    return None if packed is None else packed[0]


@dataclass(frozen=True)
class EmergencyFact:
    """A sealed fact (allergy, surgery, condition) for the emergency summary.

    Facts stay in the hot store forever: an emergency room must see a 20-year-old
    anaphylaxis even after the record itself moved to the cold tier.
    """

    person_token: str
    record_id: str
    category: int
    sealed_fact: bytes


@dataclass(frozen=True)
class MessageReceipt:
    """The idempotency key of a hospital message and what it produced."""

    hospital_id: str
    message_id: str
    content_hash: str
    person_token: str
    record_ids: tuple[str, ...] = field(default_factory=tuple)
    # What the writer attached to its claim (ingest: the reserved audit event), opaque to
    # the store; the first claim's note is the message's, whoever commits it.
    claim_note: str = ""


@dataclass(frozen=True)
class PutOutcome:
    """Result of storing one message."""

    duplicate: bool
    receipt: MessageReceipt


class MessageIdConflict(Exception):
    """The hospital reused a message id for different content."""


class ClaimedByEarlierAttempt(Exception):
    """An earlier attempt at this message claimed it under other record ids and never
    committed: the caller plans the records again under ``receipt``'s ids, person token and
    the time of its claim, seals them again (a sealed payload is bound to its record id)
    and puts the message again. Nothing was written."""

    def __init__(self, receipt: MessageReceipt) -> None:
        super().__init__("an earlier attempt claimed this message under other record ids")
        self.receipt = receipt


class RecordStore(Protocol):
    """The hot record store. Implementations: SQLite (embedded) and Cassandra."""

    async def put_message(
        self,
        receipt: MessageReceipt,
        records: Sequence[StoredRecord],
        facts: Sequence[EmergencyFact],
        cases: Sequence[SurveillanceCase] = (),
    ) -> PutOutcome:
        """Store a message's receipt, records, facts and surveillance cases once
        (see the module docstring for what holds together on each backend). The cases are
        written with the records, before the receipt commits: a message never counts
        without being stored.

        A retry with the same hospital, message id and content hash returns the
        first receipt with ``duplicate=True`` and writes nothing new. The same id
        with other content raises MessageIdConflict. A retry of an attempt that
        claimed the message and died before committing it finishes it, if its records
        carry the claim's ids; else raises ClaimedByEarlierAttempt (Cassandra only:
        SQLite never leaves a claim behind).
        """
        ...

    async def get_receipt(
        self, hospital_id: str, message_id: str, *, linearizable: bool = True
    ) -> MessageReceipt | None:
        """The receipt of an already stored message, if any.

        ``linearizable=False`` allows a cheaper read that may miss a commit still in flight
        (a hint, for callers whose next write decides anyway).
        """
        ...

    async def list_records(
        self,
        person_token: str,
        *,
        categories: Sequence[int] = (),
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[StoredRecord]:
        """A person's hot records in [start, end), oldest first."""
        ...

    async def list_facts(self, person_token: str) -> list[EmergencyFact]:
        """A person's emergency facts."""
        ...

    async def facts_version(self, person_token: str) -> str | None:
        """A value that changes whenever the person's facts do (None: no facts yet). Each
        message with facts sets a new one, written after its facts, so facts read after
        reading the version are at least that new: whatever is computed from them stays
        current while the version stays the same (record-lookup's cached summaries)."""
        ...

    async def list_effective_before(self, cutoff: datetime, limit: int) -> list[StoredRecord]:
        """Hot records effective before ``cutoff`` (for tiering), oldest first."""
        ...

    async def delete_records(self, records: Sequence[StoredRecord]) -> None:
        """Remove records from the hot tier (after the archive made them durable)."""
        ...

    async def surveillance_counts(self, start: date, end: date) -> dict[tuple[date, str], int]:
        """Distinct persons counted per (local day, district), days in [start, end)."""
        ...

    async def check(self) -> None:
        """Raise StorageUnavailable unless the store answers now (health checks)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def to_micros(moment: datetime) -> int:
    """UTC microseconds since the epoch (naive datetimes are rejected)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: healthbank stores UTC only")
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """Inverse of to_micros."""
    return datetime.fromtimestamp(micros / 1_000_000, tz=UTC)
