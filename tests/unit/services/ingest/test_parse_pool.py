"""The parse pool: same results and errors as parsing in process; workers are replaced."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from repo_paths import message as fixture

from services.ingest.model import InvalidMessage, SourceFormat
from services.ingest.parse_pool import ParsePool, parse_content

BAD_HL7 = (
    b"MSH|^~\\&|LAB|H1|HB|CITY|20260301120000||ORU^R01|BAD-1|P|2.5\r"
    b"PID|1||H1-1^^^H1^MR||Doe^Jay||19800101|M\r"
    b"OBR|1|||24323-8^Metabolic panel^LN\r"
    b"OBX|1|NM|||5|mg/dL|||||F\r"
)


@pytest.fixture
async def pool() -> AsyncIterator[ParsePool]:
    parsers = ParsePool(1, tasks_per_worker=1)
    yield parsers
    await parsers.close()


async def test_a_message_parsed_in_a_worker_equals_one_parsed_here(pool: ParsePool) -> None:
    content = fixture("fhir_admission_bundle.json")
    parsed = await pool.parse(SourceFormat.FHIR_R4_JSON, content)
    assert parsed == parse_content(SourceFormat.FHIR_R4_JSON, content)
    assert parsed.patient is not None and len(parsed.entries) == 8


async def test_a_parse_error_crosses_the_process_boundary_whole(pool: ParsePool) -> None:
    with pytest.raises(InvalidMessage) as here:
        parse_content(SourceFormat.HL7V2, BAD_HL7)
    with pytest.raises(InvalidMessage) as there:
        await pool.parse(SourceFormat.HL7V2, BAD_HL7)
    assert (there.value.reason, there.value.violations) == (
        here.value.reason,
        here.value.violations,
    )
    assert there.value.violations == [("content.OBX[0].3", "is required")]


async def test_a_worker_is_replaced_after_its_messages_so_its_memory_returns() -> None:
    content = fixture("fhir_admission_bundle.json")
    pool = ParsePool(1, tasks_per_worker=2)
    try:
        await pool.parse(SourceFormat.FHIR_R4_JSON, content)
        first = pool.worker_pids()  # waits for its second message
        await pool.parse(SourceFormat.FHIR_R4_JSON, content)  # its last: then it exits
        await pool.parse(SourceFormat.FHIR_R4_JSON, content)
        replacement = pool.worker_pids()
    finally:
        await pool.close()
    assert len(first) == 1
    assert len(replacement) == 1
    assert not first & replacement


def test_pool_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="tasks_per_worker"):
        ParsePool(1, tasks_per_worker=0)
