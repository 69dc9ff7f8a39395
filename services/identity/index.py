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

A registration with neither a known (hospital, MRN) nor a national ID is matched on its
demographics (ADR 25): candidates are the persons filed under the keyed hashes of its
blocking keys, each scored against its sealed demographics; the best one is linked, or the
pair queued for review beside a new person, or a new person is made. A newborn is always a
new person. First registrations of one new person racing at two hospitals meet at a match
claim (a conditional insert on a keyed hash of name and birth date) and become one person.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NoReturn, Protocol

from healthbank.contracts.principal import Principal
from healthbank.core.ids import new_ulid
from healthbank.core.tasks import cancel_and_wait
from healthbank.crypto import KeyedHasher, KeyProvider, Sealer
from services.identity import matching
from services.identity.domain import (
    MATCH_BLOCK_DOMAIN,
    MATCH_CLAIM_DOMAIN,
    MRN_LINK_DOMAIN,
    MRN_PERSON_DOMAIN,
    NATIONAL_ID_DOMAIN,
    Demographics,
    FoundPerson,
    HospitalLink,
    IdentityChange,
    IdentityRead,
    MatchMethod,
    MergeRecord,
    MergeRefused,
    MrnLinkedToOtherPerson,
    NationalIdClaim,
    PendingMerge,
    PersonNotFound,
    PriorRecordOutcome,
    Resolution,
    ReviewItem,
    ReviewStatus,
    SealedProfile,
    demographics_aad,
    demographics_problems,
    hospital_mrn,
)
from services.identity.match_weights import DEFAULT_WEIGHTS
from services.identity.store import IdentityStore

# National-ID pseudonyms kept in process (keyed by a local keyed hash of the ID, never the
# ID itself), so a known patient's next message needs no key-provider call.
NATIONAL_ID_CACHE_ENTRIES = 65_536
_NATIONAL_ID_CACHE_DOMAIN = "national-id-cache"
# Resolutions of known patients kept in process, keyed by the (hospital, MRN) hash and the
# national ID's pseudonym (or none): an MRN link and a national ID's holder change only by
# a merge or unmerge, so a replica can answer a known patient again without the store. The
# replica making one clears its cache at once; the others when they next poll the store's
# latest change (:meth:`MasterPatientIndex.follow_merges`, ADR 33).
KNOWN_PATIENT_CACHE_ENTRIES = 262_144


@dataclass(frozen=True)
class MatchPolicy:
    """How registrations without a national ID are matched (settings ``identity_match_*``)."""

    weights: matching.MatchWeights = DEFAULT_WEIGHTS
    thresholds: matching.MatchThresholds = field(default_factory=matching.MatchThresholds)
    # A person born at most this many days ago is a newborn: never matched, always new.
    newborn_days: int = 28
    # Persons read per blocking key: bounds the scoring a common name can cause.
    candidates_per_key: int = 20


@dataclass(frozen=True)
class BatchRegistration:
    """What :meth:`MasterPatientIndex.resolution_chains` needs of one request of a batch."""

    hospital_id: str
    mrn: str
    has_national_id: bool
    demographics: Demographics | None


@dataclass(frozen=True)
class _Candidate:
    person_token: str
    pair: matching.ScoredPair
    outcome: matching.MatchOutcome


class ReadAudit(Protocol):
    """Where reads of the index are recorded (the audit service)."""

    async def record_read(self, actor: Principal, person_token: str, read: IdentityRead) -> None:
        """Append the read to the audit log; raise if it cannot be recorded."""
        ...

    async def record_change(
        self,
        actor: Principal,
        person_tokens: Sequence[str],
        change: IdentityChange,
        resource: str,
    ) -> None:
        """Append a change of the index to each person's audit trail (``resource`` names
        the change under each person, e.g. ``merges/{id}``); raise if it cannot be recorded."""
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
        match_policy: MatchPolicy | None = None,
    ) -> None:
        """Use ``store`` for persistence, ``keys`` for keyed hashes, ``sealer`` for profiles,
        ``audit`` to record reads, ``match_policy`` for registrations without an ID."""
        self._store = store
        self._keys = keys
        self._hasher = KeyedHasher(keys)
        self._sealer = sealer
        self._now = now
        self._audit = audit
        self._policy = match_policy or MatchPolicy()
        self._national_id_hashes: OrderedDict[str, str] = OrderedDict()
        self._known_patients: OrderedDict[tuple[str, str], str] = OrderedDict()
        # Bumped by every clear: a resolution that began before one is not cached after it.
        self._known_generation = 0
        self._seen_index_change: str | None = None

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
        generation = self._known_generation
        resolution = await self._resolve(hospital_id, mrn, mrn_hash, id_hash, demographics)
        if generation != self._known_generation:
            return resolution  # a merge or unmerge happened meanwhile: may be stale already
        # Only now is the link written and the national ID (if any) held by this person.
        self._known_patients[known] = resolution.person_token
        if len(self._known_patients) > KNOWN_PATIENT_CACHE_ENTRIES:
            self._known_patients.popitem(last=False)
        return resolution

    async def resolution_chains(self, batch: Sequence[BatchRegistration]) -> list[list[int]]:
        """The positions of a batch's registrations, grouped into chains each to be resolved
        in order (chains may run concurrently).

        Requests for one (hospital, MRN) share a chain, as separate Resolve calls would run
        one after another. So do registrations matched by demographics that share a
        blocking key: resolved at the same moment neither would find the other (each looks
        before the other is filed), and two registrations of one new person would become
        two persons unless their match claims collide. A newborn is never matched (and any
        other registration of it in the batch is a newborn's too), and a patient this
        replica knows is answered from its cache (deciding nothing): both chain by record
        number only, and a batch of known patients costs no normalizing of names. So do
        demographics the request will be refused for: they are never normalized here, where
        a megabyte of name would hold the event loop for seconds before the refusal.
        """
        today = self._now().date()
        keys: list[list[Hashable]] = []
        for registration in batch:
            own: list[Hashable] = [("mrn", registration.hospital_id, registration.mrn)]
            demographics = registration.demographics
            if (
                not registration.has_national_id
                and demographics is not None
                and not demographics.is_empty()
                and not demographics_problems(demographics)
                and not await self._known(registration.hospital_id, registration.mrn)
            ):
                probe = _features(demographics)
                if not matching.is_newborn(probe.birth_date, today, self._policy.newborn_days):
                    own.extend(matching.blocking_keys(probe))
            keys.append(own)
        return _chains_sharing_keys(keys)

    async def _known(self, hospital_id: str, mrn: str) -> bool:
        """Whether a resolve of (hospital, MRN) without a national ID is answered from cache."""
        return (await self.mrn_hash(hospital_id, mrn), "") in self._known_patients

    async def _resolve(
        self,
        hospital_id: str,
        mrn: str,
        mrn_hash: str,
        id_hash: str | None,
        demographics: Demographics | None,
    ) -> Resolution:
        now = self._now()
        if id_hash is None and demographics is not None and not demographics.is_empty():
            return await self._resolve_by_demographics(
                hospital_id, mrn, mrn_hash, demographics, now
            )
        # Read at once: whom the record number is linked to, and who holds the national ID
        # (a linked record number's person is checked against it, a new one's claims it).
        linked, holder = await asyncio.gather(
            self._store.linked_person(hospital_id, mrn_hash), self._national_id_holder(id_hash)
        )
        if linked is not None:
            if id_hash is not None:
                await self._attach_national_id(linked, id_hash, holder, hospital_id, now)
            return Resolution(linked, MatchMethod.HOSPITAL_MRN)
        if id_hash is None:
            # The token is the record number's: only resolves of this (hospital, MRN) write
            # this person, and they all write the same one.
            token = await self._hasher.keyed_hash(MRN_PERSON_DOMAIN, hospital_mrn(hospital_id, mrn))
            created = await self._create_person(token, demographics, None, now)
            method = MatchMethod.CREATED if created else MatchMethod.HOSPITAL_MRN
            winner = await self._store.link_mrn_if_absent(hospital_id, mrn_hash, token, now)
        else:
            claim = (
                NationalIdClaim(holder, won=False)
                if holder is not None
                else await self._store.claim_national_id(id_hash, id_hash, now)
            )
            token = claim.holder
            method = MatchMethod.CREATED if claim.won else MatchMethod.NATIONAL_ID
            # The claim comes first, so a person whose token is an ID's hash always has it.
            # Its winner writes the person without looking (nobody else decided this token
            # before it), with the link; anyone else writes it only if missing (a winner
            # that died first).
            if claim.won:
                winner = await self._store.save_person_and_link(
                    token,
                    await self._sealed_profile(token, demographics),
                    now,
                    id_hash,
                    hospital_id=hospital_id,
                    mrn_hash=mrn_hash,
                )
            else:
                if token == id_hash:
                    await self._create_person(token, demographics, id_hash, now)
                winner = await self._store.link_mrn_if_absent(hospital_id, mrn_hash, token, now)
        if winner == token:
            return Resolution(token, method)
        if id_hash is None:
            # A concurrent resolve linked the MRN first (to a person it knew by national ID).
            return Resolution(winner, MatchMethod.HOSPITAL_MRN)
        await self._conflict(winner, token, hospital_id, now)

    async def _resolve_by_demographics(
        self,
        hospital_id: str,
        mrn: str,
        mrn_hash: str,
        demographics: Demographics,
        now: datetime,
    ) -> Resolution:
        """The person of a (hospital, MRN) without a national ID: the one it is linked to, or
        else one found or created by its demographics, then linked."""
        own_token = await self._hasher.keyed_hash(MRN_PERSON_DOMAIN, hospital_mrn(hospital_id, mrn))
        probe = _features(demographics)
        block_hashes = await self._block_hashes(probe)
        newborn = matching.is_newborn(probe.birth_date, now.date(), self._policy.newborn_days)

        async def own_and_candidates() -> tuple[bool, list[SealedProfile]]:
            """Whether the registration's own person exists, and the candidates' profiles."""
            if newborn:
                return await self._store.person_exists(own_token), []
            tokens = await self._store.persons_matching(
                block_hashes, self._policy.candidates_per_key
            )
            # The registration's own person is read with the candidates (one request, not
            # two): a retry of a registration that made its person before it was linked
            # finds it again, and its candidates are not looked at.
            profiles = await self._store.profiles(
                [own_token, *(token for token in tokens if token != own_token)]
            )
            return any(profile.person_token == own_token for profile in profiles), profiles

        # The candidates are read while the link is (ADR 64): an unknown record number, the
        # usual case here, waits for one read fewer. A record number linked already (by
        # another replica, or before a restart) stops the search: its answer never waits
        # for, or fails with, a candidate read it does not need.
        candidates = asyncio.ensure_future(own_and_candidates())
        try:
            linked = await self._store.linked_person(hospital_id, mrn_hash)
        except BaseException:
            await cancel_and_wait(candidates)
            raise
        if linked is not None:
            await cancel_and_wait(candidates)
            return Resolution(linked, MatchMethod.HOSPITAL_MRN)
        exists, profiles = await candidates
        best = None
        if not newborn and not exists:
            best = await self._best_candidate(probe, profiles)
            if best is not None and best.outcome is matching.MatchOutcome.LINK:
                return await self._link_matched(
                    hospital_id, mrn_hash, best.person_token, now, demographics, block_hashes
                )
        sealed = await self._sealer.seal(demographics.to_bytes(), demographics_aad(own_token))
        claim = None if newborn else _claim_value(probe)
        won_claim = False
        if claim is not None:
            claim_hash = await self._hasher.keyed_hash(MATCH_CLAIM_DOMAIN, claim)
            holder = await self._store.claim_match(claim_hash, own_token, sealed, now)
            won_claim = holder.person_token == own_token
            if not won_claim:
                rival = await self._best_candidate(probe, [holder])
                if rival is not None and rival.outcome is matching.MatchOutcome.LINK:
                    # The claimant may not have made its person yet: the same row it will
                    # write (the sealed profile it claimed with), so whoever comes first
                    # makes it.
                    await self._store.save_person(
                        holder.person_token, holder.sealed_demographics, now
                    )
                    await self._file_under_keys(holder)
                    return await self._link_matched(
                        hospital_id, mrn_hash, holder.person_token, now, demographics, block_hashes
                    )
                if best is None or (rival and rival.pair.probability > best.pair.probability):
                    best = rival
        # The keys may land a moment before the person row: a candidate found without its
        # row is skipped (profiles), as one filed a moment later is not found at all. Only
        # resolves of this (hospital, MRN) write this token's row (ADR 39). The link only
        # once the person exists: a crash never leaves a link to no person.
        winner = await self._store.save_person_and_link(
            own_token,
            sealed,
            now,
            block_hashes=block_hashes,
            hospital_id=hospital_id,
            mrn_hash=mrn_hash,
        )
        if winner != own_token:
            return Resolution(winner, MatchMethod.HOSPITAL_MRN)
        review = best is not None and best.outcome is matching.MatchOutcome.REVIEW
        if best is not None and review:
            await self._store.record_review(
                ReviewItem(
                    review_id=_review_id(own_token, best.person_token),
                    person_token=own_token,
                    candidate_token=best.person_token,
                    probability=best.pair.probability,
                    levels=best.pair.levels,
                    create_time=now,
                )
            )
        # The claim's winner is the person's creator, even when a rival that matched it
        # wrote the person row first (it does so on the winner's behalf, above).
        created = won_claim if claim is not None else not exists
        method = MatchMethod.CREATED if created else MatchMethod.HOSPITAL_MRN
        return Resolution(own_token, method, review_pending=review)

    async def _link_matched(
        self,
        hospital_id: str,
        mrn_hash: str,
        person_token: str,
        now: datetime,
        demographics: Demographics,
        block_hashes: Sequence[str],
    ) -> Resolution:
        # A candidate merged since it was filed resolves to the person it was merged into.
        person_token = await self._store.survivor_of(person_token) or person_token
        winner = await self._store.link_mrn_if_absent(hospital_id, mrn_hash, person_token, now)
        if winner != person_token:
            return Resolution(winner, MatchMethod.HOSPITAL_MRN)
        # Later registrations are compared with this one too, and find it by its own keys
        # (ADR 47): else a third registration that resembles this one but not the person's
        # first is not found. Filed after the link: a crash in between costs only that.
        sealed = await self._sealer.seal(demographics.to_bytes(), demographics_aad(person_token))
        await asyncio.gather(
            self._store.add_profile(person_token, mrn_hash, sealed),
            self._store.add_match_keys(person_token, block_hashes),
        )
        return Resolution(winner, MatchMethod.DEMOGRAPHICS)

    async def _best_candidate(
        self, probe: matching.MatchFeatures, profiles: Sequence[SealedProfile]
    ) -> _Candidate | None:
        """The candidate scoring highest against ``probe`` (persons without demographics
        cannot be matched and are skipped); of equal scores the least person token, so the
        choice never depends on the order a store lists candidates in."""
        best = None
        for profile in profiles:
            stored = await self._profile_features(profile)
            if stored is None:
                continue
            pair = matching.score(self._policy.weights, probe, stored)
            if best is None or (-pair.probability, profile.person_token) < (
                -best.pair.probability,
                best.person_token,
            ):
                outcome = matching.decide(pair, self._policy.thresholds)
                best = _Candidate(profile.person_token, pair, outcome)
        return best

    async def _profile_features(self, profile: SealedProfile) -> matching.MatchFeatures | None:
        if profile.sealed_demographics is None:
            return None
        plaintext = await self._sealer.open(
            profile.sealed_demographics, demographics_aad(profile.person_token)
        )
        return _features(Demographics.from_bytes(plaintext), profile.national_id_hash or "")

    async def _block_hashes(self, probe: matching.MatchFeatures) -> list[str]:
        return [
            await self._hasher.keyed_hash(MATCH_BLOCK_DOMAIN, f"{rule}\x00{key}")
            for rule, key in matching.blocking_keys(probe)
        ]

    async def _file_under_keys(self, profile: SealedProfile) -> None:
        stored = await self._profile_features(profile)
        if stored is not None:
            await self._store.add_match_keys(profile.person_token, await self._block_hashes(stored))

    async def lookup(self, actor: Principal, national_id: str) -> FoundPerson:
        """The person token holding a national ID and the persons merged into it
        (:meth:`merged_into`), the read audited as ``actor``'s.

        The merged persons are read while the read is audited, and returned only once it
        is. Raises PersonNotFound if nobody holds the ID (nothing about a person is revealed
        then, and nothing is audited), or the audit's error if the read cannot be recorded.
        """
        person_token = await self._store.national_id_holder(
            await self.national_id_hash(national_id)
        )
        if person_token is None:
            raise PersonNotFound()
        merged = asyncio.ensure_future(self.merged_into(person_token))
        try:
            await self._audit.record_read(actor, person_token, IdentityRead.NATIONAL_ID_LOOKUP)
        except BaseException:
            await cancel_and_wait(merged)  # the cancelled read's outcome is moot
            raise
        return FoundPerson(person_token, await merged)

    async def merged_into(self, person_token: str) -> list[str]:
        """Every person merged into ``person_token``, directly or through another merged
        one (a survivor can itself be merged later), sorted."""
        found: set[str] = set()
        frontier = [person_token]
        while frontier:
            absorbed = await asyncio.gather(*(self._store.absorbed_by(t) for t in frontier))
            frontier = [t for tokens in absorbed for t in tokens if t not in found]
            found.update(frontier)
        return sorted(found - {person_token})

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

    # --- the review queue, merge and unmerge (privacy officers; every change audited) ---

    async def reviews(self, include_decided: bool) -> list[ReviewItem]:
        """The match review queue, oldest first."""
        items = await self._store.reviews()
        return [i for i in items if include_decided or i.status is ReviewStatus.PENDING]

    async def decide_review(self, actor: Principal, review_id: str, accept: bool) -> ReviewItem:
        """Accept (merge the new person into the candidate) or reject a pending review.

        Raises PersonNotFound for an unknown review, MergeRefused when it is decided already
        or the merge is refused; the audit's error if the decision cannot be recorded.
        """
        item = next((i for i in await self._store.reviews() if i.review_id == review_id), None)
        if item is None:
            raise PersonNotFound()
        if item.status is not ReviewStatus.PENDING:
            raise MergeRefused("REVIEW_ALREADY_DECIDED", "the review has been decided already")
        change = (
            IdentityChange.MATCH_REVIEW_ACCEPTED if accept else IdentityChange.MATCH_REVIEW_REJECTED
        )
        await self._audit.record_change(
            actor, [item.candidate_token, item.person_token], change, f"matchReviews/{review_id}"
        )
        merge_id = ""
        if accept:
            merge = await self.merge(actor, item.candidate_token, item.person_token)
            merge_id = merge.merge_id
        status = ReviewStatus.ACCEPTED if accept else ReviewStatus.REJECTED
        if not await self._store.decide_review(review_id, status, merge_id):
            raise MergeRefused("REVIEW_ALREADY_DECIDED", "the review has been decided already")
        return ReviewItem(
            item.review_id,
            item.person_token,
            item.candidate_token,
            item.probability,
            item.levels,
            item.create_time,
            status,
            merge_id,
        )

    async def follow_merges(self) -> bool:
        """Drop the known-patient cache if any replica merged or unmerged since the last
        look (the first look only notes where the store stands); True if it was dropped."""
        change = await self._store.last_index_change()
        seen, self._seen_index_change = self._seen_index_change, change
        if seen is None or seen == change:
            return False
        self._forget_known_patients()
        return True

    def _forget_known_patients(self) -> None:
        self._known_patients.clear()
        self._known_generation += 1

    async def merge_prior_records(
        self, actor: Principal, hospital_id: str, person_token: str, prior_mrns: Sequence[str]
    ) -> list[PriorRecordOutcome]:
        """A hospital merged its earlier record numbers ``prior_mrns`` into the one that
        resolved to ``person_token`` (HL7 ADT^A40, ADR 33): make them one person.

        An unknown prior number is linked to the person. A prior number's person that only
        this hospital knows is the hospital's own duplicate registration, so it is merged
        (audited as ``actor``'s change, on the hospital's behalf); one that another hospital
        knows too, or that the merge refuses (both hold a national ID), waits for a privacy
        officer in the review queue. A retried message finds the work done.
        """
        outcomes = []
        for prior_mrn in prior_mrns:
            prior_hash = await self.mrn_hash(hospital_id, prior_mrn)
            now = self._now()
            prior_person = await self._store.linked_person(hospital_id, prior_hash)
            if prior_person is None:
                prior_person = await self._store.link_mrn_if_absent(
                    hospital_id, prior_hash, person_token, now
                )
                if prior_person == person_token:
                    outcomes.append(PriorRecordOutcome.LINKED)
                    continue
            if prior_person == person_token:
                outcomes.append(PriorRecordOutcome.ALREADY_SAME_PERSON)
                continue
            outcomes.append(
                await self._merge_hospital_duplicate(actor, hospital_id, person_token, prior_person)
            )
        return outcomes

    async def _merge_hospital_duplicate(
        self, actor: Principal, hospital_id: str, survivor: str, absorbed: str
    ) -> PriorRecordOutcome:
        links = await self._store.links_of(absorbed)
        if all(link.hospital_id == hospital_id for link in links):
            try:
                await self.merge(actor, survivor, absorbed, IdentityChange.HOSPITAL_RECORDS_MERGED)
                return PriorRecordOutcome.MERGED
            except (MergeRefused, PersonNotFound):
                pass  # two national IDs, or one of them merged meanwhile: a person decides
        await self._store.record_review(
            ReviewItem(
                review_id=_review_id(absorbed, survivor),
                person_token=absorbed,
                candidate_token=survivor,
                probability=1.0,
                levels={"hospital_record_merge": "asserted"},
                create_time=self._now(),
            )
        )
        return PriorRecordOutcome.REVIEW

    async def merge(
        self,
        actor: Principal,
        survivor: str,
        absorbed: str,
        change: IdentityChange = IdentityChange.PERSONS_MERGED,
    ) -> MergeRecord:
        """Merge ``absorbed`` into ``survivor``, audited as ``actor``'s ``change`` first.

        Raises PersonNotFound when either is unknown, MergeRefused when they are the same,
        either was merged already, or both hold a national ID (two IDs are two people).
        """
        if survivor == absorbed:
            raise MergeRefused("SAME_PERSON", "a person cannot be merged into itself")
        profiles = {p.person_token: p for p in await self._store.profiles([survivor, absorbed])}
        if len(profiles) != 2:
            raise PersonNotFound()
        for token in (survivor, absorbed):
            if await self._store.survivor_of(token) is not None:
                raise MergeRefused("PERSON_ALREADY_MERGED", "a person was merged already")
        survivor_id = profiles[survivor].national_id_hash
        absorbed_id = profiles[absorbed].national_id_hash
        if survivor_id and absorbed_id:
            raise MergeRefused(
                "BOTH_HOLD_NATIONAL_IDS", "both persons hold a national ID: they are two people"
            )
        now = self._now()
        merge_id = new_ulid(now)
        await self._audit.record_change(actor, [survivor, absorbed], change, f"merges/{merge_id}")
        merge = await self._store.merge_persons(merge_id, survivor, absorbed, absorbed_id, now)
        # Links moved: a cached resolution may name the absorbed person (ADR 24's cache).
        self._forget_known_patients()
        return merge

    async def unmerge(self, actor: Principal, merge_id: str) -> MergeRecord:
        """Undo a merge exactly, audited as ``actor``'s change first.

        Raises PersonNotFound for an unknown merge, MergeRefused when it is undone already.
        """
        merge = await self._store.merge_record(merge_id)
        if merge is None:
            raise PersonNotFound()
        if merge.undone:
            raise MergeRefused("MERGE_ALREADY_UNDONE", "the merge has been undone already")
        await self._audit.record_change(
            actor,
            [merge.survivor_token, merge.absorbed_token],
            IdentityChange.PERSONS_UNMERGED,
            f"merges/{merge_id}",
        )
        await self._store.unmerge_persons(merge)
        self._forget_known_patients()
        return MergeRecord(
            merge.merge_id,
            merge.survivor_token,
            merge.absorbed_token,
            merge.moved_links,
            merge.national_id_hash,
            merge.merge_time,
            undone=True,
        )

    async def _create_person(
        self,
        person_token: str,
        demographics: Demographics | None,
        id_hash: str | None,
        now: datetime,
    ) -> bool:
        """Save the person unless it exists; True if it did not exist before this call.

        Racing calls for one token may each find it missing and each save it: they are
        resolves of one registration deciding the same token (ADR 39)."""
        if await self._store.person_exists(person_token):
            return False
        sealed = await self._sealed_profile(person_token, demographics)
        await self._store.save_person(person_token, sealed, now, id_hash)
        return True

    async def _sealed_profile(
        self, person_token: str, demographics: Demographics | None
    ) -> bytes | None:
        """The person's profile sealed to it (None without demographics)."""
        if demographics is None or demographics.is_empty():
            return None
        return await self._sealer.seal(demographics.to_bytes(), demographics_aad(person_token))

    async def _national_id_holder(self, id_hash: str | None) -> str | None:
        return None if id_hash is None else await self._store.national_id_holder(id_hash)

    async def _attach_national_id(
        self,
        person_token: str,
        id_hash: str,
        holder: str | None,
        hospital_id: str,
        now: datetime,
    ) -> None:
        """Make ``person_token`` the holder of a national ID (held by ``holder`` when read),
        or raise MrnLinkedToOtherPerson.

        The person's own slot is filled first, so a person never takes two IDs; then the ID
        is claimed, so an ID never has two holders. A lost claim empties the slot again.
        """
        if holder == person_token:
            return
        if holder is not None:
            await self._conflict(person_token, holder, hospital_id, now)
        if await self._store.reserve_national_id(person_token, id_hash) != id_hash:
            # The person holds another national ID: this one is somebody else's, unknown yet.
            raise MrnLinkedToOtherPerson()
        holder = (await self._store.claim_national_id(id_hash, person_token, now)).holder
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


def _features(demographics: Demographics, national_id_hash: str = "") -> matching.MatchFeatures:
    return matching.features(
        family_name=demographics.family_name,
        given_name=demographics.given_name,
        birth_date=demographics.birth_date,
        sex=demographics.sex,
        phone=demographics.phone,
        address=demographics.address,
        national_id=national_id_hash,
    )


def _chains_sharing_keys(keys: Sequence[Sequence[Hashable]]) -> list[list[int]]:
    """Positions grouped so that any two sharing a key are in one group (transitively), each
    group in ascending order; groups in the order of their first position (union-find)."""
    parent = list(range(len(keys)))

    def root(position: int) -> int:
        while parent[position] != position:
            parent[position] = parent[parent[position]]
            position = parent[position]
        return position

    first_holder: dict[Hashable, int] = {}
    for position, own in enumerate(keys):
        for key in own:
            one, other = root(position), root(first_holder.setdefault(key, position))
            if one != other:
                parent[max(one, other)] = min(one, other)
    chains: dict[int, list[int]] = {}
    for position in range(len(keys)):
        chains.setdefault(root(position), []).append(position)
    return list(chains.values())


def _claim_value(probe: matching.MatchFeatures) -> str | None:
    """What racing registrations of one new person share: romanized names and birth date."""
    names = sorted(part for part in (probe.family, probe.given) if part)
    if len(names) < 2 or not probe.birth_date:
        return None
    return "\x00".join([*names, probe.birth_date])


def _review_id(person_token: str, candidate_token: str) -> str:
    """The same pair always gets the same id, so a retried registration queues it once."""
    return hashlib.sha256(f"{person_token}\x00{candidate_token}".encode()).hexdigest()[:32]
