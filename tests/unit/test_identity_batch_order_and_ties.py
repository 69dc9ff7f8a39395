"""What decides a batch's or a tie's outcome in the master patient index (ADR 54).

Registrations that could decide each other's person must not be resolved at the same moment
(MasterPatientIndex.resolution_chains): one (hospital, MRN)'s requests, and registrations
matched by demographics that share a blocking key. Everything else may run concurrently.
Of equally good candidates, the choice must not depend on the order a store lists them in.
"""

from __future__ import annotations

import asyncio
import json
import zipfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from repo_paths import SYNTHEA_SAMPLE

from healthbank.crypto import LocalKeyring, Sealer
from healthbank.storage.errors import StorageUnavailable
from services.identity import matching
from services.identity.domain import Demographics, MatchMethod, SealedProfile, demographics_aad
from services.identity.index import BatchRegistration, MasterPatientIndex
from services.identity.store import SqliteIdentityStore

NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


def index(tmp_path: Path, store: SqliteIdentityStore | None = None) -> MasterPatientIndex:
    keyring = LocalKeyring(tmp_path / "keyring.json", "unit-test", scrypt_n=2**10)
    # Never opened unless given: chains read nothing.
    store = store or SqliteIdentityStore(tmp_path / "identity.db")
    return MasterPatientIndex(store, keyring, Sealer(keyring, 60, 1000), lambda: NOW, audit=None)  # type: ignore[arg-type]


def person(
    family: str,
    given: str,
    birth_date: str,
    phone: str = "",
    mrn: str = "",
    national_id: bool = False,
) -> BatchRegistration:
    demographics = Demographics(
        family_name=family, given_name=given, birth_date=birth_date, phone=phone
    )
    return BatchRegistration(
        "h1", mrn or f"{family}-{given}-{birth_date}", national_id, demographics
    )


async def test_registrations_sharing_a_blocking_key_chain_in_request_order(tmp_path: Path) -> None:
    batch = [
        person("王", "晓明", "1975-06-08"),  # 0
        person("Li", "Na", "1990-01-01", phone="13800000001"),  # 1
        person("Wang", "Xiaoming", "1975-08-06"),  # 2: 0's full name (romanized)
        person("Zhao", "Lei", "1962-03-04"),  # 3: nothing shared
        person("Chen", "Hong", "1988-09-09", phone="13800000001"),  # 4: 1's phone
        person("Wáng", "Xiǎomíng", "1980-01-01", phone="13900000009"),  # 5: 0 and 2's name
    ]
    assert await index(tmp_path).resolution_chains(batch) == [[0, 2, 5], [1, 4], [3]]


async def test_one_record_number_chains_whatever_its_requests_carry(tmp_path: Path) -> None:
    batch = [
        BatchRegistration("h1", "A-1", has_national_id=False, demographics=None),
        BatchRegistration("h2", "A-1", has_national_id=False, demographics=None),
        person("Zhao", "Lei", "1962-03-04", mrn="A-1"),
        BatchRegistration("h1", "A-1", has_national_id=True, demographics=None),
    ]
    assert await index(tmp_path).resolution_chains(batch) == [[0, 2, 3], [1]]


async def test_chains_join_through_a_registration_that_links_them(tmp_path: Path) -> None:
    # 0 and 1 share nothing; 2 shares a phone with 0 and a birth date with 1.
    batch = [
        person("Sun", "Mei", "1970-01-01", phone="13811111111"),
        person("Zhou", "Jie", "1999-12-31"),
        person("Wu", "Gang", "1999-12-31", phone="13811111111"),
    ]
    assert await index(tmp_path).resolution_chains(batch) == [[0, 1, 2]]


async def test_registrations_with_a_national_id_or_of_newborns_chain_by_record_number_only(
    tmp_path: Path,
) -> None:
    born = (NOW.date() - timedelta(days=2)).isoformat()
    batch = [
        person("Liu", "Yang", "1985-05-05", mrn="I-1", national_id=True),
        person("Liu", "Yang", "1985-05-05", mrn="I-2", national_id=True),
        person("Ma", "", born, phone="13822222222", mrn="N-1"),
        person("Ma", "", born, phone="13822222222", mrn="N-2"),
        BatchRegistration("h1", "E-1", has_national_id=False, demographics=Demographics()),
        BatchRegistration("h1", "E-2", has_national_id=False, demographics=Demographics()),
    ]
    assert await index(tmp_path).resolution_chains(batch) == [[0], [1], [2], [3], [4], [5]]


async def test_demographics_the_request_is_refused_for_chain_by_record_number_only(
    tmp_path: Path,
) -> None:
    # Refused before they are resolved: never normalized, and never joined to a valid one.
    refused = [
        Demographics(family_name="Zhao", given_name="Lei", birth_date="1962-03-04", sex="yes"),
        Demographics(family_name="Zhao", given_name="Lei", address="路" * 10_000),
        Demographics(family_name="Zhao", given_name="Lei", birth_date="04/03/1962"),
    ]
    batch = [
        person("Zhao", "Lei", "1962-03-04", mrn="V-1"),
        *(BatchRegistration("h1", f"R-{n}", False, d) for n, d in enumerate(refused)),
    ]
    assert await index(tmp_path).resolution_chains(batch) == [[0], [1], [2], [3]]


async def test_a_patient_this_replica_knows_chains_by_record_number_only(tmp_path: Path) -> None:
    store = await SqliteIdentityStore(tmp_path / "identity.db").open()
    try:
        known = index(tmp_path, store)
        first = person("Zhou", "Xun", "1974-10-18", mrn="K-1")
        await known.resolve(first.hospital_id, first.mrn, None, first.demographics)
        batch = [first, person("Zhou", "Xun", "1974-10-18", mrn="K-2")]
        assert await known.resolution_chains(batch) == [[0], [1]]
        # Another replica, which has not resolved K-1 yet, chains the two.
        assert await index(tmp_path, store).resolution_chains(batch) == [[0, 1]]
    finally:
        await store.close()


class CandidateSearchDown(SqliteIdentityStore):
    """A store whose candidate search fails, as a timed-out read would."""

    async def persons_matching(self, block_hashes: Sequence[str], limit: int) -> list[str]:
        raise StorageUnavailable("the candidate search timed out")


async def test_a_linked_record_number_resolves_by_its_link_while_the_candidate_search_fails(
    tmp_path: Path,
) -> None:
    # Another replica (or this one after a restart) does not know the record number: it
    # reads the link and searches candidates at once (ADR 64). The link answers; the search
    # it no longer needs must not fail the resolve.
    first = person("Zhou", "Xun", "1974-10-18", mrn="K-1")
    store = await SqliteIdentityStore(tmp_path / "identity.db").open()
    try:
        made = await index(tmp_path, store).resolve(
            first.hospital_id, first.mrn, None, first.demographics
        )
    finally:
        await store.close()
    failing = await CandidateSearchDown(tmp_path / "identity.db").open()
    try:
        again = await index(tmp_path, failing).resolve(
            first.hospital_id, first.mrn, None, first.demographics
        )
        assert again.person_token == made.person_token
        assert again.match_method is MatchMethod.HOSPITAL_MRN
        # An unknown record number needs the search, and fails with it.
        with pytest.raises(StorageUnavailable):
            await index(tmp_path, failing).resolve("h1", "K-2", None, first.demographics)
    finally:
        await failing.close()


async def test_of_equally_good_candidates_the_least_person_token_wins_in_any_order(
    tmp_path: Path,
) -> None:
    # Which candidate an arriving registration is compared against first is the store's
    # order (SQLite and Cassandra list them differently); the choice must not be.
    keyring = LocalKeyring(tmp_path / "keyring.json", "unit-test", scrypt_n=2**10)
    sealer = Sealer(keyring, 60, 1000)
    chosen = index(tmp_path)
    demographics = Demographics(
        family_name="Zhou", given_name="Xun", birth_date="1974-10-18", phone="13812345678"
    )
    profiles = [
        SealedProfile(token, await sealer.seal(demographics.to_bytes(), demographics_aad(token)))
        for token in ("b" * 64, "a" * 64, "c" * 64)
    ]
    probe = matching.features(
        family_name="Zhou", given_name="Xun", birth_date="1974-10-18", phone="13812345678"
    )
    for order in (profiles, profiles[::-1]):
        best = await chosen._best_candidate(probe, order)
        assert best is not None and best.person_token == "a" * 64


def synthea_patients() -> list[Demographics]:
    """The Patient resources of Synthea's sample (names with Synthea's digits, US phones)."""
    found = []
    with zipfile.ZipFile(SYNTHEA_SAMPLE) as sample:
        for name in sorted(sample.namelist()):
            for entry in json.loads(sample.read(name)).get("entry", []):
                patient = entry["resource"]
                if patient["resourceType"] != "Patient":
                    continue
                (official, *_) = patient["name"]
                found.append(
                    Demographics(
                        family_name=official["family"],
                        given_name=" ".join(official["given"]),
                        birth_date=patient["birthDate"],
                        sex=patient["gender"],
                        phone=patient["telecom"][0]["value"],
                        address=" ".join(patient["address"][0]["line"]),
                    )
                )
    return found


async def test_synthea_patients_registered_twice_in_one_batch_are_one_person_each(
    tmp_path: Path,
) -> None:
    # Each patient again at a second hospital, the birth date's day and month swapped where
    # that is a date (so most match claims differ): resolved all at once, about half of the
    # second registrations became second persons; chained, none does.
    patients = synthea_patients()
    assert len(patients) >= 30
    batch = [BatchRegistration("h1", f"A-{n}", False, d) for n, d in enumerate(patients)]
    for number, demographics in enumerate(patients):
        year, month, day = demographics.birth_date.split("-")
        swapped = f"{year}-{day}-{month}" if int(day) <= 12 else demographics.birth_date
        moved = Demographics(**{**demographics.__dict__, "birth_date": swapped})
        batch.append(BatchRegistration("h2", f"B-{number}", False, moved))
    store = await SqliteIdentityStore(tmp_path / "identity.db").open()
    try:
        resolver = index(tmp_path, store)

        async def resolve_in_order(chain: list[int]) -> list[str]:
            tokens = []
            for position in chain:
                item = batch[position]
                resolved = await resolver.resolve(
                    item.hospital_id, item.mrn, None, item.demographics
                )
                tokens.append(resolved.person_token)
            return tokens

        chains = await resolver.resolution_chains(batch)
        tokens: dict[int, str] = {}
        for chain, resolved in zip(
            chains, await asyncio.gather(*(resolve_in_order(c) for c in chains)), strict=True
        ):
            tokens.update(zip(chain, resolved, strict=True))
    finally:
        await store.close()
    count = len(patients)
    assert [tokens[n] == tokens[count + n] for n in range(count)] == [True] * count
    assert len(set(tokens.values())) == count
