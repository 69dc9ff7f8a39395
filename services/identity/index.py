"""The master patient index: national IDs and hospital record numbers to person tokens.

National ID numbers are pseudonymised by the key provider the moment they arrive and are
never stored; demographics are stored sealed, bound to their person token.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from healthbank.crypto import KeyProvider, Sealer
from services.identity.domain import (
    NATIONAL_ID_DOMAIN,
    Demographics,
    HospitalLink,
    MatchMethod,
    MrnLinkedToOtherPerson,
    NationalIdRequired,
    PersonNotFound,
    Resolution,
    demographics_aad,
    match_existing_link,
)
from services.identity.store import IdentityStore


class MasterPatientIndex:
    """Resolves hospital patients to persons and looks persons up."""

    def __init__(
        self,
        store: IdentityStore,
        keys: KeyProvider,
        sealer: Sealer,
        now: Callable[[], datetime],
    ) -> None:
        """Use ``store`` for persistence, ``keys`` for pseudonyms, ``sealer`` for profiles."""
        self._store = store
        self._keys = keys
        self._sealer = sealer
        self._now = now

    async def person_token_for(self, national_id: str) -> str:
        """The person token of a normalized, validated national ID (whether known or not)."""
        return await self._keys.pseudonym(NATIONAL_ID_DOMAIN, national_id)

    async def resolve(
        self,
        hospital_id: str,
        mrn: str,
        national_id: str | None,
        demographics: Demographics | None,
    ) -> Resolution:
        """Find or create the person a hospital patient is, and link the hospital's MRN.

        ``national_id`` must already be validated and normalized. An existing (hospital, MRN)
        link wins; otherwise the national ID's person is found or created and linked.
        Concurrent calls for the same person agree on one person and one link, because both
        writes are conditional inserts.

        Raises:
            MrnLinkedToOtherPerson: the MRN belongs to someone else than the national ID.
            NationalIdRequired: the MRN is not linked yet and no national ID was given.
        """
        national_token = await self.person_token_for(national_id) if national_id else None
        linked_token = await self._store.linked_person(hospital_id, mrn)
        if linked_token is not None:
            return match_existing_link(linked_token, national_token)
        if national_token is None:
            raise NationalIdRequired()
        now = self._now()
        created = False
        if not await self._store.person_exists(national_token):
            sealed = None
            if demographics is not None and not demographics.is_empty():
                sealed = await self._sealer.seal(
                    demographics.to_bytes(), demographics_aad(national_token)
                )
            # Another resolve may have created the person since the check: the conditional
            # insert decides who did.
            created = await self._store.create_person_if_absent(national_token, sealed, now)
        linked_token = await self._store.link_mrn_if_absent(hospital_id, mrn, national_token, now)
        if linked_token != national_token:
            # A concurrent resolve linked this MRN to someone else first.
            raise MrnLinkedToOtherPerson()
        return Resolution(
            national_token, MatchMethod.CREATED if created else MatchMethod.NATIONAL_ID
        )

    async def lookup(self, national_id: str) -> str:
        """The person token of a known national ID; PersonNotFound if nobody has it."""
        person_token = await self.person_token_for(national_id)
        if not await self._store.person_exists(person_token):
            raise PersonNotFound()
        return person_token

    async def links_of(self, person_token: str) -> list[HospitalLink]:
        """The person's hospital record numbers; PersonNotFound for an unknown token."""
        if not await self._store.person_exists(person_token):
            raise PersonNotFound()
        return await self._store.links_of(person_token)
