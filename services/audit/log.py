"""The audit log itself: append, signed tree heads, proofs and per-person listings.

No grpc here: the servicer validates requests and maps the errors below to statuses.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from google.protobuf.message import DecodeError

from healthbank.audit.v1 import audit_pb2
from healthbank.ledger import merkle
from healthbank.ledger.tree_head import leaf_bytes, to_millis, tree_head_bytes
from services.audit.store import AuditStore, LeafEntry, PersonCursor

# Entries per GetEntries answer: a page of events a verifier hashes in one go.
MAX_ENTRIES = 1000
# ...and stored bytes per answer: each entry carries its leaf and the event parsed from it,
# and 1,000 bulk-write events naming 51 records each would pass gRPC's 4 MiB message limit.
MAX_ENTRIES_BYTES = 1 << 20

# A signed head is reused until the tree grows or it is this old, so reading the head does
# not cost a signature (a Vault round trip) per call.
DEFAULT_HEAD_MAX_AGE = timedelta(seconds=30)
# While the tree grows, a new head is signed at least this often (witnesses and monitors
# follow these heads; a reader asking for the head still gets the current one).
HEAD_INTERVAL = timedelta(seconds=1)


class Signer(Protocol):
    """The part of healthbank.crypto.KeyProvider that signs tree heads."""

    async def sign(self, message: bytes) -> bytes:
        """Ed25519 signature of ``message``."""
        ...

    async def public_key(self) -> bytes:
        """Raw 32-byte Ed25519 public key."""
        ...


class EventIdConflict(Exception):
    """An event_id already in the log was sent again with different content."""

    def __init__(self, event_id: str, leaf_index: int) -> None:
        super().__init__(f"event {event_id} is already logged at leaf {leaf_index}")
        self.event_id = event_id
        self.leaf_index = leaf_index


class TreeRangeError(Exception):
    """Proof arguments do not fit the tree; ``violations`` are (argument, rule) pairs."""

    def __init__(self, violations: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{name} {rule}" for name, rule in violations))
        self.violations = violations


class InvalidPageToken(Exception):
    """A page token that this log did not issue for this person."""


@dataclass(frozen=True)
class Appended:
    """Where an event landed in the log."""

    leaf_index: int
    leaf_hash: bytes
    tree_size: int
    duplicate: bool


@dataclass(frozen=True)
class TreeHead:
    """A signed tree head (see tree_head.tree_head_bytes for what is signed)."""

    tree_size: int
    root_hash: bytes
    timestamp: datetime
    signature: bytes
    public_key: bytes


@dataclass(frozen=True)
class InclusionProof:
    """Audit path of one leaf against a tree size."""

    leaf_index: int
    tree_size: int
    leaf_hash: bytes
    audit_path: list[bytes]


@dataclass(frozen=True)
class ConsistencyProof:
    """Proof that the first tree is a prefix of the second."""

    first_tree_size: int
    second_tree_size: int
    proof: list[bytes]


@dataclass(frozen=True)
class LoggedEvent:
    """An event of a person's access history and its leaf index."""

    event: audit_pb2.AccessEvent
    leaf_index: int


@dataclass(frozen=True)
class LogEntry:
    """A leaf of the log: its index, its stored bytes and the event parsed from them."""

    leaf_index: int
    event: audit_pb2.AccessEvent
    leaf: bytes


@dataclass(frozen=True)
class EventPage:
    """One page of a person's access history, newest first."""

    events: list[LoggedEvent]
    next_cursor: PersonCursor | None


class AuditLog:
    """The append-only access ledger over an :class:`AuditStore`."""

    def __init__(
        self,
        store: AuditStore,
        signer: Signer,
        now: Callable[[], datetime],
        *,
        head_max_age: timedelta = DEFAULT_HEAD_MAX_AGE,
    ) -> None:
        """Log in ``store``, signing heads with ``signer``; ``now`` is the UTC clock."""
        self._store = store
        self._signer = signer
        self._now = now
        self._head_max_age = head_max_age
        self._head: TreeHead | None = None

    async def append(self, event: audit_pb2.AccessEvent) -> Appended:
        """Append ``event`` (already validated and complete) once per event_id.

        Raises EventIdConflict when the id is logged with different content.
        """
        return (await self.append_many([event]))[0]

    async def append_many(self, events: Sequence[audit_pb2.AccessEvent]) -> list[Appended]:
        """Append ``events`` in order (validated, complete), each once per event_id; they
        share a group commit with whatever else is being appended.

        Raises EventIdConflict for the first id logged with different content (the other
        events are appended all the same: each append stands alone).
        """
        entries = []
        for event in events:
            leaf = leaf_bytes(event)
            entries.append(
                LeafEntry(
                    event_id=event.event_id,
                    person_token=event.person_token,
                    occur_time=event.occur_time.ToDatetime(tzinfo=UTC),
                    leaf=leaf,
                    leaf_hash=merkle.leaf_hash(leaf),
                )
            )
        outcomes = await self._store.append_many(entries)
        for entry, outcome in zip(entries, outcomes, strict=True):
            if outcome.duplicate and outcome.leaf != entry.leaf:
                raise EventIdConflict(entry.event_id, outcome.leaf_index)
        # Indexes are dense and each batch is placed in order, so the tree right after a
        # leaf has index + 1 leaves; a retry answers exactly what the first call answered.
        return [
            Appended(
                leaf_index=outcome.leaf_index,
                leaf_hash=outcome.leaf_hash,
                tree_size=outcome.leaf_index + 1,
                duplicate=outcome.duplicate,
            )
            for outcome in outcomes
        ]

    async def tree_head(self) -> TreeHead:
        """The signed head of the current tree (reused while fresh and the size is unchanged)."""
        size = await self._store.tree_size()
        now = self._now()
        cached = self._head
        if (
            cached is not None
            and cached.tree_size == size
            and timedelta(0) <= now - cached.timestamp < self._head_max_age
        ):
            return cached
        root = await self._root(size)
        # The signed bytes carry milliseconds; keep the head's timestamp exactly that.
        timestamp_ms = to_millis(now)
        timestamp = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=timestamp_ms)
        signature = await self._signer.sign(tree_head_bytes(size, root, timestamp_ms))
        head = TreeHead(
            tree_size=size,
            root_hash=root,
            timestamp=timestamp,
            signature=signature,
            public_key=await self._signer.public_key(),
        )
        self._head = head
        return head

    @property
    def latest_head(self) -> TreeHead | None:
        """The last head signed by this process (None before the first)."""
        return self._head

    async def sign_heads(self, interval: timedelta = HEAD_INTERVAL) -> None:
        """Sign the current head every ``interval`` (a no-op while the tree does not grow,
        until the head ages out); runs until cancelled, letting errors propagate.

        The interval runs from the start of one signing to the start of the next, so the
        time a signing takes under load (finishing a pending batch, reading the root, the
        signature) does not stretch the gap between heads beyond ``interval``."""
        loop = asyncio.get_running_loop()
        period = interval.total_seconds()
        while True:
            started = loop.time()
            await self.tree_head()
            await asyncio.sleep(max(0.0, started + period - loop.time()))

    async def _root(self, size: int) -> bytes:
        nodes = await self._store.get_nodes(merkle.root_keys(size))
        return merkle.root_hash(size, nodes)

    async def inclusion_proof(self, leaf_index: int, tree_size: int) -> InclusionProof:
        """Audit path of ``leaf_index`` in the tree of ``tree_size`` leaves (0: current)."""
        current = await self._store.tree_size()
        size = tree_size or current
        violations: list[tuple[str, str]] = []
        if size > current:
            violations.append(("tree_size", "must not exceed the current tree size"))
        elif leaf_index >= size:
            violations.append(("leaf_index", "must be less than the tree size"))
        if violations:
            raise TreeRangeError(violations)
        leaf_key = (0, leaf_index)
        nodes = await self._store.get_nodes([leaf_key, *merkle.inclusion_keys(leaf_index, size)])
        if leaf_key not in nodes:
            raise merkle.MissingNode(leaf_key)
        return InclusionProof(
            leaf_index=leaf_index,
            tree_size=size,
            leaf_hash=nodes[leaf_key],
            audit_path=merkle.inclusion_path(leaf_index, size, nodes),
        )

    async def consistency_proof(self, first: int, second: int) -> ConsistencyProof:
        """Proof that tree ``first`` is a prefix of tree ``second`` (0: current)."""
        current = await self._store.tree_size()
        size = second or current
        violations: list[tuple[str, str]] = []
        if size > current:
            violations.append(("second_tree_size", "must not exceed the current tree size"))
        elif first > size:
            violations.append(("first_tree_size", "must not exceed second_tree_size"))
        if violations:
            raise TreeRangeError(violations)
        nodes = await self._store.get_nodes(merkle.consistency_keys(first, size))
        return ConsistencyProof(
            first_tree_size=first,
            second_tree_size=size,
            proof=merkle.consistency_proof(first, size, nodes),
        )

    async def entries(self, start: int, end: int) -> list[LogEntry]:
        """The stored leaves of indexes ``[start, end)`` in log order (at most MAX_ENTRIES).

        Stored bytes are passed on as they are, so a verifier sees what is stored: an
        index with no leaf is absent, and bytes that do not parse come with an empty event.
        """
        current = await self._store.tree_size()
        if end > current:
            raise TreeRangeError([("end_index", "must not exceed the current tree size")])
        leaves = await self._store.get_leaves(start, end, limit=MAX_ENTRIES)
        page: list[LogEntry] = []
        size = 0
        for stored in leaves:
            size += 2 * len(stored.leaf)
            if page and size > MAX_ENTRIES_BYTES:
                break  # the verifier asks again from the next index
            page.append(
                LogEntry(leaf_index=stored.leaf_index, event=_parsed(stored.leaf), leaf=stored.leaf)
            )
        return page

    async def list_events(
        self, person_token: str, page_size: int, after: PersonCursor | None
    ) -> EventPage:
        """One page of ``person_token``'s access events, newest first, after ``after``."""
        # One extra row tells whether another page exists.
        leaves = await self._store.list_person_leaves(
            person_token, after=after, limit=page_size + 1
        )
        page = leaves[:page_size]
        events = []
        for logged in page:
            event = audit_pb2.AccessEvent()
            event.ParseFromString(logged.leaf)
            events.append(LoggedEvent(event=event, leaf_index=logged.leaf_index))
        next_cursor = None
        if len(leaves) > page_size and page:
            last = page[-1]
            next_cursor = PersonCursor(occur_us=last.occur_us, leaf_index=last.leaf_index)
        return EventPage(events=events, next_cursor=next_cursor)


def _parsed(leaf: bytes) -> audit_pb2.AccessEvent:
    event = audit_pb2.AccessEvent()
    try:
        event.ParseFromString(leaf)
    except DecodeError:
        # Damaged bytes: the verifier finds that the (empty) event does not match them.
        return audit_pb2.AccessEvent()
    return event


def _person_tag(person_token: str) -> str:
    # Binds a token to its person without putting the person token itself into it.
    return hashlib.sha256(b"healthbank-audit-page\x00" + person_token.encode()).hexdigest()[:16]


def encode_page_token(person_token: str, cursor: PersonCursor) -> str:
    """An opaque page token for the page after ``cursor`` of ``person_token``'s history."""
    body = json.dumps(
        {"v": 1, "p": _person_tag(person_token), "t": cursor.occur_us, "i": cursor.leaf_index},
        separators=(",", ":"),
    )
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def decode_page_token(page_token: str, person_token: str) -> PersonCursor:
    """The cursor in ``page_token``; InvalidPageToken if malformed or for another person."""
    try:
        raw = base64.urlsafe_b64decode(page_token + "=" * (-len(page_token) % 4))
        body = json.loads(raw)
        valid = (
            isinstance(body, dict)
            and body.get("v") == 1
            and body.get("p") == _person_tag(person_token)
            and type(body.get("t")) is int
            and type(body.get("i")) is int
            and body["i"] >= 0
        )
    except (binascii.Error, ValueError, UnicodeDecodeError):
        valid = False
    if not valid:
        raise InvalidPageToken("page token is malformed or belongs to another listing")
    return PersonCursor(occur_us=body["t"], leaf_index=body["i"])
