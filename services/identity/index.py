"""The master patient index: hospital record numbers and national IDs to person tokens.

Identifiers are hashed under keys from the key provider the moment they arrive and are never
stored (ADR 4, ADR 16): a national ID becomes ``pseudonym("national-id", id)`` (the token of
a person created from it), a hospital record number a keyed hash of (hospital, MRN) made
with a locally held derived key (:class:`~healthbank.crypto.KeyedHasher`), so resolving a
known (hospital, MRN) needs no key-provider call. Demographics are stored sealed, bound to
their person token. Reads of the index (national-ID lookups, persons) are audited before
they answer.

A person is first known either by a national ID (its token is the ID's pseudonym) or by a
hospital record number alone (its token is a keyed hash of (hospital, MRN) in another
domain, so racing first messages agree on one person). A national ID arriving later for a
known (hospital, MRN) is attached to that person when nobody holds it; when someone else
does, nothing is merged: the call is refused as a conflict and a pending merge is recorded
for the MPI's review.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import NoReturn, Protocol

from healthbank.contracts.principal import Principal
from healthbank.crypto import KeyedHasher, KeyProvider, Sealer
from services.identity.domain import (
    MRN_LINK_DOMAIN,
    MRN_PERSON_DOMAIN,
    NATIONAL_ID_DOMAIN,
    Demographics,
    HospitalLink,
    IdentityRead,
    MatchMethod,
    MrnLinkedToOtherPerson,
    PendingMerge,
    PersonNotFound,
    Resolution,
    demographics_aad,
    hospital_mrn,
)
from services.identity.store import IdentityStore

# National-ID pseudonyms kept in process (keyed by a local keyed hash of the ID, never the
# ID itself), so a known patient's next message needs no key-provider call.
NATIONAL_ID_CACHE_ENTRIES = 65_536
_NATIONAL_ID_CACHE_DOMAIN = "national-id-cache"
# Resolutions of known patients kept in process, keyed by the (hospital, MRN) hash and the
# national ID's pseudonym (or none): an MRN link and a national ID's holder, once written,
# are never changed or removed, so a replica can answer a known patient again without the
# store. (Merge and unmerge, when they come, must clear this cache: they change links.)
KNOWN_PATIENT_CACHE_ENTRIES = 262_144


class ReadAudit(Protocol):
    """Where reads of the index are recorded (the audit service)."""

    async def record_read(self, actor: Principal, person_token: str, read: IdentityRead) -> None:
        """Append the read to the audit log; raise if it cannot be recorded."""
        ...


class MasterPatientIndex:
    """Resolves hospital patients to persons and looks persons up, auditing every read."""

    def __init__(
        self,
        store: IdentityStore,
        keys: KeyProvider,
        sealer: Sealer,
        now: Callable[[], datetime],
        audit: ReadAudit,
    ) -> None:
        """Use ``store`` for persistence, ``keys`` for keyed hashes, ``sealer`` for profiles,
        ``audit`` to record reads."""
        self._store = store
        self._keys = keys
        self._hasher = KeyedHasher(keys)
        self._sealer = sealer
        self._now = now
        self._audit = audit
        self._national_id_hashes: OrderedDict[str, str] = OrderedDict()
        self._known_patients: OrderedDict[tuple[str, str], str] = OrderedDict()

    async def national_id_hash(self, national_id: str) -> str:
        """The pseudonym of a normalized, validated national ID (whether known or not)."""
        cache_key = await self._hasher.keyed_hash(_NATIONAL_ID_CACHE_DOMAIN, national_id)
        cached = self._national_id_hashes.get(cache_key)
        if cached is not None:
            self._national_id_hashes.move_to_end(cache_key)
            return cached
        pseudonym = await self._keys.pseudonym(NATIONAL_ID_DOMAIN, national_id)
        self._national_id_hashes[cache_key] = pseudonym
        if len(self._national_id_hashes) > NATIONAL_ID_CACHE_ENTRIES:
            self._national_id_hashes.popitem(last=False)
        return pseudonym

    async def mrn_hash(self, hospital_id: str, mrn: str) -> str:
        """The stored form of a hospital's record number (a keyed hash of both)."""
        return await self._hasher.keyed_hash(MRN_LINK_DOMAIN, hospital_mrn(hospital_id, mrn))

    async def resolve(
        self,
        hospital_id: str,
        mrn: str,
        national_id: str | None,
        demographics: Demographics | None,
    ) -> Resolution:
        """Find or create the person a hospital patient is, and link the hospital's MRN.

        ``national_id`` (optional) must already be validated and normalized. An existing
        (hospital, MRN) link wins, and a national ID nobody holds yet is attached to its
        person; otherwise the national ID's person, or else a person for the MRN alone, is
        found or created and linked. Concurrent calls agree on one person and one link,
        because every write that decides is a conditional insert.

        Raises:
            MrnLinkedToOtherPerson: the MRN and the national ID belong to different persons
                (a pending merge is recorded when both persons exist).
        """
        mrn_hash = await self.mrn_hash(hospital_id, mrn)
        id_hash = await self.national_id_hash(national_id) if national_id else None
        known = (mrn_hash, id_hash or "")
        cached = self._known_patients.get(known)
        if cached is not None:
            self._known_patients.move_to_end(known)
            return Resolution(cached, MatchMethod.HOSPITAL_MRN)
        resolution = await self._resolve(hospital_id, mrn, mrn_hash, id_hash, demographics)
        # Only now is the link written and the national ID (if any) held by this person.
        self._known_patients[known] = resolution.person_token
        if len(self._known_patients) > KNOWN_PATIENT_CACHE_ENTRIES:
            self._known_patients.popitem(last=False)
        return resolution

    async def _resolve(
        self,
        hospital_id: str,
        mrn: str,
        mrn_hash: str,
        id_hash: str | None,
        demographics: Demographics | None,
    ) -> Resolution:
        now = self._now()
        linked = await self._store.linked_person(hospital_id, mrn_hash)
        if linked is not None:
            if id_hash is not None:
                await self._attach_national_id(linked, id_hash, hospital_id, now)
            return Resolution(linked, MatchMethod.HOSPITAL_MRN)
        if id_hash is None:
            token = await self._hasher.keyed_hash(MRN_PERSON_DOMAIN, hospital_mrn(hospital_id, mrn))
            created = await self._create_person(token, demographics, None, now)
            method = MatchMethod.CREATED if created else MatchMethod.HOSPITAL_MRN
        else:
            token = await self._store.national_id_holder(id_hash) or (
                await self._store.claim_national_id(id_hash, id_hash, now)
            )
            # The claim comes first, so a person whose token is an ID's hash always has it.
            created = token == id_hash and await self._create_person(
                token, demographics, id_hash, now
            )
            method = MatchMethod.CREATED if created else MatchMethod.NATIONAL_ID
        winner = await self._store.link_mrn_if_absent(hospital_id, mrn_hash, token, now)
        if winner == token:
            return Resolution(token, method)
        if id_hash is None:
            # A concurrent resolve linked the MRN first (to a person it knew by national ID).
            return Resolution(winner, MatchMethod.HOSPITAL_MRN)
        await self._conflict(winner, token, hospital_id, now)

    async def lookup(self, actor: Principal, national_id: str) -> str:
        """The person token holding a national ID, the read audited as ``actor``'s.

        Raises PersonNotFound if nobody holds it (nothing about a person is revealed then,
        and nothing is audited), or the audit's error if the read cannot be recorded.
        """
        person_token = await self._store.national_id_holder(
            await self.national_id_hash(national_id)
        )
        if person_token is None:
            raise PersonNotFound()
        await self._audit.record_read(actor, person_token, IdentityRead.NATIONAL_ID_LOOKUP)
        return person_token

    async def links_of(self, actor: Principal, person_token: str) -> list[HospitalLink]:
        """The person's hospital links, the read audited as ``actor``'s before it is made.

        Raises PersonNotFound for an unknown token, or the audit's error.
        """
        if not await self._store.person_exists(person_token):
            raise PersonNotFound()
        await self._audit.record_read(actor, person_token, IdentityRead.PERSON)
        return await self._store.links_of(person_token)

    async def pending_merges(self) -> list[PendingMerge]:
        """Persons that messages said are one, waiting for the MPI's review."""
        return await self._store.pending_merges()

    async def _create_person(
        self,
        person_token: str,
        demographics: Demographics | None,
        id_hash: str | None,
        now: datetime,
    ) -> bool:
        """Create the person unless it exists (sealing its profile); True if this call did."""
        if await self._store.person_exists(person_token):
            return False
        sealed = None
        if demographics is not None and not demographics.is_empty():
            profile = demographics.to_bytes()
            sealed = await self._sealer.seal(profile, demographics_aad(person_token))
        # Another resolve may have created the person since the check: the conditional
        # insert decides who did.
        return await self._store.create_person_if_absent(person_token, sealed, now, id_hash)

    async def _attach_national_id(
        self, person_token: str, id_hash: str, hospital_id: str, now: datetime
    ) -> None:
        """Make ``person_token`` the holder of a national ID, or raise MrnLinkedToOtherPerson.

        The person's own slot is filled first, so a person never takes two IDs; then the ID
        is claimed, so an ID never has two holders. A lost claim empties the slot again.
        """
        holder = await self._store.national_id_holder(id_hash)
        if holder == person_token:
            return
        if holder is not None:
            await self._conflict(person_token, holder, hospital_id, now)
        if await self._store.reserve_national_id(person_token, id_hash) != id_hash:
            # The person holds another national ID: this one is somebody else's, unknown yet.
            raise MrnLinkedToOtherPerson()
        holder = await self._store.claim_national_id(id_hash, person_token, now)
        if holder != person_token:
            await self._store.release_national_id(person_token, id_hash)
            await self._conflict(person_token, holder, hospital_id, now)

    async def _conflict(
        self, mrn_person: str, national_id_person: str, hospital_id: str, now: datetime
    ) -> NoReturn:
        """Record that two persons may be one (never merged here) and refuse the resolve."""
        await self._store.record_pending_merge(
            PendingMerge(mrn_person, national_id_person, hospital_id, now)
        )
        raise MrnLinkedToOtherPerson()
