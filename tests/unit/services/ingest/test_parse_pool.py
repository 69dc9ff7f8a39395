"""The parse pool: same results and errors as parsing in process; a backlog never stalls;
a large message's worker exits after it; a small FHIR message is parsed in process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from repo_paths import MESSAGES, synthea_bundles
from repo_paths import message as fixture

from services.ingest.model import InvalidMessage, SourceFormat
from services.ingest.parse_pool import DEFAULT_INLINE_MESSAGE_BYTES, ParsePool, parse_content

BAD_HL7 = (
    b"MSH|^~\\&|LAB|H1|HB|CITY|20260301120000||ORU^R01|BAD-1|P|2.5\r"
    b"PID|1||H1-1^^^H1^MR||Doe^Jay||19800101|M\r"
    b"OBR|1|||24323-8^Metabolic panel^LN\r"
    b"OBX|1|NM|||5|mg/dL|||||F\r"
)


@pytest.fixture
async def pool() -> AsyncIterator[ParsePool]:
    parsers = ParsePool(1)
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


async def test_a_backlog_far_beyond_the_workers_is_all_parsed() -> None:
    # max_tasks_per_child would deadlock here on CPython 3.11-3.13 (gh-115634).
    content = fixture("fhir_admission_bundle.json")
    pool = ParsePool(1)
    try:
        parsed = await asyncio.wait_for(
            asyncio.gather(*(pool.parse(SourceFormat.FHIR_R4_JSON, content) for _ in range(200))),
            timeout=60,
        )
    finally:
        await pool.close()
    assert len(parsed) == 200
    assert all(len(message.entries) == 8 for message in parsed)


async def test_a_large_message_is_parsed_in_a_worker_that_exits_after_it() -> None:
    content = fixture("fhir_admission_bundle.json")
    pool = ParsePool(1, large_message_bytes=len(content))
    try:
        await pool.start()
        long_lived = pool.worker_pids()
        seen: set[int] = set()
        parsing = asyncio.ensure_future(pool.parse(SourceFormat.FHIR_R4_JSON, content))
        while not parsing.done():
            seen |= pool.large_message_pids()
            await asyncio.sleep(0.001)
        parsed = await parsing
        seen_after_large = pool.large_message_pids()
        small = await pool.parse(SourceFormat.FHIR_R4_JSON, content.rstrip())  # one byte less
    finally:
        await pool.close()
    assert parsed == small == parse_content(SourceFormat.FHIR_R4_JSON, content)
    assert len(seen) == 1 and not seen & long_lived
    assert seen_after_large == set()
    (pid,) = seen
    assert not Path(f"/proc/{pid}").exists()


async def test_a_small_fhir_message_is_parsed_here_and_others_in_a_worker() -> None:
    small = fixture("fhir_lab_message_bundle.json")  # 2,330 bytes
    pool = ParsePool(1)  # not started: its worker would start on first use
    try:
        parsed = await pool.parse(SourceFormat.FHIR_R4_JSON, small)
        with pytest.raises(InvalidMessage) as refused:
            await pool.parse(SourceFormat.FHIR_R4_JSON, b'{"resourceType": "Bundle"}')
        assert pool.worker_pids() == set()
        await pool.parse(SourceFormat.HL7V2, fixture("hl7_oru_r01.er7"))  # 696 bytes, HL7
        assert len(pool.worker_pids()) == 1
    finally:
        await pool.close()
    assert parsed == parse_content(SourceFormat.FHIR_R4_JSON, small)
    with pytest.raises(InvalidMessage) as here:
        parse_content(SourceFormat.FHIR_R4_JSON, b'{"resourceType": "Bundle"}')
    assert refused.value.violations == here.value.violations


def small_synthea_bundles(limit: int) -> list[bytes]:
    """Transaction bundles under the inline size cut from Synthea's patients: each resource with its
    patient when that fits, else alone (many then refused: the comparison covers both)."""
    pieces: list[bytes] = []
    for raw in synthea_bundles().values():
        entries = json.loads(raw).get("entry", [])
        patients = [e for e in entries if e["resource"]["resourceType"] == "Patient"]
        for entry in entries:
            for kept in ([*patients, entry], [entry]):
                piece = json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": kept})
                if len(piece) < DEFAULT_INLINE_MESSAGE_BYTES:
                    pieces.append(piece.encode())
                    break
            if len(pieces) == limit:
                return pieces
    return pieces


async def outcome_of(pool: ParsePool, content: bytes) -> object:
    """The parsed message, or the refusal's reason and violations."""
    try:
        return await pool.parse(SourceFormat.FHIR_R4_JSON, content)
    except InvalidMessage as refused:
        return (refused.reason, refused.violations)


async def test_small_synthea_bundles_parse_here_as_they_do_in_a_worker() -> None:
    pieces = small_synthea_bundles(300)
    here, there = ParsePool(1), ParsePool(1, inline_message_bytes=0)
    try:
        inline = [await outcome_of(here, piece) for piece in pieces]
        in_worker = [await outcome_of(there, piece) for piece in pieces]
        assert here.worker_pids() == set() and len(there.worker_pids()) == 1
    finally:
        await here.close()
        await there.close()
    assert len(pieces) == 300
    assert inline == in_worker
    parsed = sum(1 for result in inline if not isinstance(result, tuple))
    assert 0 < parsed < len(pieces)  # parsed and refused ones both compared


async def test_a_fhir_message_at_the_inline_size_goes_to_a_worker() -> None:
    content = fixture("fhir_lab_message_bundle.json")
    pool = ParsePool(1, inline_message_bytes=len(content))
    try:
        await pool.parse(SourceFormat.FHIR_R4_JSON, content)
        assert len(pool.worker_pids()) == 1
    finally:
        await pool.close()


def test_a_new_worker_inherits_the_main_module_instead_of_importing_it_again() -> None:
    # Every worker runs the parent's main module again (healthbank.cli: seconds of imports
    # per large message) unless the fork server loaded it first.
    probe = subprocess.run(
        [sys.executable, "-m", "probe_main"],
        cwd=Path(__file__).parent / "forkserver_probe",
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert probe.stdout.split() == ["inherited"]


OWNER_THEN_KILLED = """
import asyncio, multiprocessing.forkserver, time
from services.ingest.model import SourceFormat
from services.ingest.parse_pool import ParsePool

async def main():
    pool = ParsePool(2)
    content = open(CONTENT, "rb").read()
    await asyncio.gather(*(pool.parse(SourceFormat.FHIR_R4_JSON, content) for _ in range(8)))
    forkserver = multiprocessing.forkserver._forkserver._forkserver_pid
    print(forkserver, *pool.worker_pids(), flush=True)
    time.sleep(600)

asyncio.run(main())
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for whoever adopts it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_workers_and_fork_server_exit_when_the_owner_is_killed() -> None:
    # Without the workers' watch on their owner, a SIGKILLed ingest left its fork server
    # and parse workers running for good (seen after every chaos run).
    content = MESSAGES / "fhir_admission_bundle.json"
    owner = subprocess.Popen(
        [sys.executable, "-c", f"CONTENT = {str(content)!r}\n" + OWNER_THEN_KILLED],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        forkserver, *workers = (int(pid) for pid in owner.stdout.readline().split())
        assert len(workers) == 2 and all(_running(pid) for pid in (forkserver, *workers))
    finally:
        owner.kill()
        owner.wait(timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_running(p) for p in (forkserver, *workers)):
        time.sleep(0.1)
    assert [pid for pid in (forkserver, *workers) if _running(pid)] == []


def test_pool_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="large_message_bytes"):
        ParsePool(1, large_message_bytes=0)
    with pytest.raises(ValueError, match="inline_message_bytes"):
        ParsePool(1, inline_message_bytes=-1)
