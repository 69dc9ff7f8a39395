"""`healthbank ingest` loads Synthea's FHIR output, as generated, into a running stack.

The seven services run as processes on embedded storage; the loader runs as the real
command (a subprocess) and calls as the hospital's integration engine. What was stored is
read back from the stack's own stores and keys: per resource type, the records equal the
source resources, byte for byte as JSON values.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pydicom_outcomes import TEST_FILES
from repo_paths import SYNTHEA_SAMPLE, synthea_bundles

from healthbank.contracts.natid import make_national_id
from healthbank.core.config import load_settings
from healthbank.crypto import build_key_provider, build_sealer
from healthbank.dev.devstack import LocalStack
from healthbank.loader import message_id_for
from healthbank.records import open_record_store, payload_aad
from services.ingest.store import SqliteIngestStore

HOSPITAL = "hospital-synthea"
AUTH_SECRET = "cli-ingest-secret"
DIRECTORY_PREFIXES = ("hospitalInformation", "practitionerInformation")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    local = LocalStack(
        tmp_path_factory.mktemp("cli-ingest") / "data",
        env={"HEALTHBANK_AUTH_SECRET": AUTH_SECRET},
    )
    local.start(timeout=120)
    try:
        yield local
    finally:
        codes = local.stop()
        assert codes == dict.fromkeys(codes, 0), codes


def _ingest(
    stack: LocalStack, *paths: Path, as_json: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HEALTHBANK_AUTH_SECRET": AUTH_SECRET}
    return subprocess.run(
        [
            sys.executable,
            *("-m", "healthbank.cli", "ingest", "--hospital", HOSPITAL),
            *("--ingest", stack.addresses["ingest"]),
            *(["--json"] if as_json else []),
            *map(str, paths),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )


def _settings(stack: LocalStack) -> Any:
    return load_settings(
        {"HEALTHBANK_DATA_DIR": str(stack.data_dir), "HEALTHBANK_AUTH_SECRET": AUTH_SECRET}
    )


async def _stored_resources(stack: LocalStack, name: str, content: bytes) -> list[Any]:
    """The FHIR resources stored for one loaded file, opened with the stack's own keys."""
    settings = _settings(stack)
    records = await open_record_store(settings)
    sealer = build_sealer(settings, build_key_provider(settings))
    try:
        receipt = await records.get_receipt(HOSPITAL, message_id_for(name, content))
        assert receipt is not None, name
        wanted = set(receipt.record_ids)
        stored = [
            r for r in await records.list_records(receipt.person_token) if r.record_id in wanted
        ]
        assert len(stored) == len(wanted)
        return [
            json.loads(
                await sealer.open(r.sealed_payload, payload_aad(r.person_token, r.record_id))
            )
            for r in stored
        ]
    finally:
        await records.close()


def _assert_stored_as_sent(stack: LocalStack, name: str, content: bytes) -> None:
    sources = [
        entry["resource"]
        for entry in json.loads(content)["entry"]
        if entry["resource"]["resourceType"] != "Patient"
    ]
    stored = asyncio.run(_stored_resources(stack, name, content))
    by_type = Counter(resource["resourceType"] for resource in stored)
    assert by_type == Counter(resource["resourceType"] for resource in sources), name
    canonical = sorted(json.dumps(resource, sort_keys=True) for resource in stored)
    assert canonical == sorted(json.dumps(resource, sort_keys=True) for resource in sources)


def _with_national_id(content: bytes, serial: int, *, grow_to: int = 0) -> bytes:
    """The bundle with a national ID added to its Patient (the rest as generated), and with
    copies of its Observations (new ids) appended until it has ``grow_to`` entries."""
    bundle = json.loads(content)
    observations = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    copies = 0
    while len(bundle["entry"]) < grow_to:
        entry = copy.deepcopy(observations[copies % len(observations)])
        copies += 1
        entry["resource"]["id"] = f"copy-{copies}"
        entry["fullUrl"] = f"urn:uuid:00000000-0000-4000-8000-{copies:012d}"
        bundle["entry"].append(entry)
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Patient":
            entry["resource"]["identifier"].append(
                {
                    "system": "urn:oid:2.16.156.10011.1.1",
                    "value": make_national_id("320102", date(1980, 1, 1), serial),
                }
            )
    return json.dumps(bundle).encode()


def test_directory_bundles_load_as_the_hospital_directory(
    stack: LocalStack, tmp_path: Path
) -> None:
    bundles = {n: d for n, d in synthea_bundles().items() if n.startswith(DIRECTORY_PREFIXES)}
    paths = []
    for name, data in bundles.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    result = _ingest(stack, *paths)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert {k: summary[k] for k in ("files", "messages", "accepted", "rejected", "reasons")} == {
        "files": 2,
        "messages": 2,
        "accepted": 2,
        "rejected": 0,
        "reasons": {},
    }

    async def directory() -> Counter[str]:
        store = await SqliteIngestStore(stack.data_dir / "ingest.db").open()
        try:
            return Counter(entry.resource_type for entry in await store.list_directory(HOSPITAL))
        finally:
            await store.close()

    expected: Counter[str] = Counter()
    for data in bundles.values():
        expected.update(e["resource"]["resourceType"] for e in json.loads(data)["entry"])
    assert asyncio.run(directory()) == expected


def test_a_rejected_file_is_reported_with_its_reason_and_exit_code_1(
    stack: LocalStack, tmp_path: Path
) -> None:
    (tmp_path / "broken.json").write_bytes(b'{"resourceType": "Bundle", "type": "batch"}')
    (tmp_path / "readme.txt").write_bytes(b"not a message")
    result = _ingest(stack, tmp_path)
    assert result.returncode == 1
    assert json.loads(result.stdout) == {
        "files": 2,
        "messages": 1,
        "accepted": 0,
        "rejected": 1,
        "partial": 0,
        "reasons": {"INVALID_FHIR": 1},
        "skipped": 1,
        "records": 0,
        "unidentified": 0,
    }
    table = _ingest(stack, tmp_path, as_json=False)
    assert "REJECTED" in table.stdout and "content.entry" in table.stdout
    assert "SKIPPED" in table.stdout


def test_a_file_of_several_patients_one_rejected_is_partial_with_exit_code_1(
    stack: LocalStack, tmp_path: Path
) -> None:
    bundles = synthea_bundles()
    names = sorted(name for name in bundles if name.startswith(("Demarcus", "Carlo")))
    entries = [entry for name in names for entry in json.loads(bundles[name])["entry"]]
    second = [i for i, e in enumerate(entries) if e["resource"]["resourceType"] == "Patient"][1]
    for identifier in entries[second]["resource"]["identifier"]:
        identifier.pop("type", None)  # no identifier is the record number (MR) any more
    batch = {"resourceType": "Bundle", "type": "batch", "entry": entries}
    (tmp_path / "two-patients.json").write_text(json.dumps(batch))
    first_records = len(json.loads(bundles[names[0]])["entry"]) - 1  # all but the Patient

    result = _ingest(stack, tmp_path)

    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert {k: summary[k] for k in ("messages", "accepted", "rejected", "partial", "records")} == {
        "messages": 1,
        "accepted": 0,
        "rejected": 0,
        "partial": 1,
        "records": first_records,
    }
    assert summary["reasons"] == {"INVALID_FHIR": 1}
    table = _ingest(stack, tmp_path, as_json=False).stdout
    assert "PARTIAL" in table and "1 of 2 patients stored; patient-2: INVALID_FHIR" in table
    assert f"content.entry[{second}].resource.identifier" in table


def test_an_anonymised_dicom_study_loads_under_one_unidentified_patient(
    stack: LocalStack, tmp_path: Path
) -> None:
    # Two files of one study without PatientID (the JPEG and the same image decompressed).
    names = ("SC_rgb_jpeg.dcm", "SC_rgb_jpeg_dcmd.dcm")
    for name in names:
        (tmp_path / name).write_bytes((TEST_FILES / name).read_bytes())
    result = _ingest(stack, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert {k: summary[k] for k in ("messages", "accepted", "unidentified")} == {
        "messages": 2,
        "accepted": 2,
        "unidentified": 2,
    }

    async def persons() -> set[str]:
        records = await open_record_store(_settings(stack))
        try:
            receipts = [
                await records.get_receipt(
                    HOSPITAL, message_id_for(str(tmp_path / n), (tmp_path / n).read_bytes())
                )
                for n in names
            ]
            return {receipt.person_token for receipt in receipts if receipt is not None}
        finally:
            await records.close()

    assert len(asyncio.run(persons())) == 1
    again = _ingest(stack, tmp_path, as_json=False)  # already loaded: duplicates
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("DUPLICATE") == 2


def test_synthea_bundles_store_every_resource_as_sent(stack: LocalStack, tmp_path: Path) -> None:
    # Two patients: the smallest, and the largest grown past 2,000 entries (no entry cap;
    # reported by several audit events). A national ID is added so this runs before
    # identity creates persons without one.
    patients = sorted(
        (d for n, d in synthea_bundles().items() if not n.startswith(DIRECTORY_PREFIXES)),
        key=len,
    )
    (tmp_path / "smallest.json").write_bytes(_with_national_id(patients[0], 101))
    (tmp_path / "largest.json").write_bytes(_with_national_id(patients[-1], 102, grow_to=2100))
    chosen = ("smallest.json", "largest.json")
    result = _ingest(stack, tmp_path, as_json=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "STORED" in result.stdout and "accepted" in result.stdout
    for name in chosen:
        path = tmp_path / name
        _assert_stored_as_sent(stack, str(path), path.read_bytes())
    # Loading again stores nothing twice.
    again = _ingest(stack, tmp_path)
    assert json.loads(again.stdout)["accepted"] == 2
    assert json.loads(again.stdout)["records"] == 0


def test_a_bulk_data_export_loads_one_message_per_patient(
    stack: LocalStack, tmp_path: Path
) -> None:
    # A Synthea patient as a Bulk Data export writes it: one NDJSON file per resource type,
    # references as ResourceType/id (a national ID added, as above).
    patients = sorted(
        (d for n, d in synthea_bundles().items() if not n.startswith(DIRECTORY_PREFIXES)),
        key=len,
    )
    bundle = json.loads(_with_national_id(patients[1], 103))
    ids = {
        e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle["entry"]
    }
    by_type: dict[str, list[str]] = {}
    for entry in bundle["entry"]:
        line = json.dumps(entry["resource"])
        for full_url, relative in ids.items():
            line = line.replace(f'"{full_url}"', f'"{relative}"')
        by_type.setdefault(entry["resource"]["resourceType"], []).append(line)
    export = tmp_path / "export"
    export.mkdir()
    for resource_type, lines in by_type.items():
        (export / f"{resource_type}.ndjson").write_text("\n".join(lines) + "\n")
    result = _ingest(stack, export)
    summary = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (summary["files"], summary["messages"], summary["accepted"]) == (len(by_type), 1, 1)
    assert summary["records"] == len(bundle["entry"]) - 1


@pytest.mark.timeout(1800)
def test_the_synthea_sample_loads_exactly_as_generated(stack: LocalStack) -> None:
    result = _ingest(stack, SYNTHEA_SAMPLE)
    summary = json.loads(result.stdout)
    bundles = synthea_bundles()
    assert summary["rejected"] == 0, summary["reasons"]
    assert summary["files"] == summary["messages"] == summary["accepted"] == len(bundles)
    for name, data in bundles.items():
        if not name.startswith(DIRECTORY_PREFIXES):
            _assert_stored_as_sent(stack, f"{SYNTHEA_SAMPLE}!{name}", data)
