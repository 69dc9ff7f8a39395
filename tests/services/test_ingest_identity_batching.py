"""Ingest's identity client over real gRPC: the patients of concurrent messages leave together
in ResolveBatch calls (ADR 55), each message gets its own person or its own refusal, and a
refusal points at where the refused value came from in the message, alone or batched."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import date

import pytest
from service_support import RunningServices, answered_calls

from healthbank.contracts.natid import make_national_id
from healthbank.core.config import Settings
from healthbank.core.logs import request_id_var
from healthbank.rpc.interceptors import inbound_deadline
from services.audit.app import open_service as open_audit
from services.identity.app import open_service as open_identity
from services.ingest.clients import GrpcIdentityResolver
from services.ingest.model import Demographics, PatientIdentity
from services.ingest.pipeline import PatientRejected

HOSPITAL = "hospital-a"
PATIENTS = 24
SEX_PATH = "content.entry[0].resource.gender"


def patient(number: int, *, mrn: str = "", sex: str = "female", serial: int = 0) -> PatientIdentity:
    birth = date(1960, 1, 1 + number % 28)
    return PatientIdentity(
        mrn=mrn or f"G-{number}",
        national_id=make_national_id("110105", birth, (100 + (serial or number)) % 1000),
        demographics=Demographics(
            family_name="Quarnby",
            given_name=f"Liora{number}",
            birth_date=birth.isoformat(),
            sex=sex,
        ),
        field_paths={"demographics.sex": SEX_PATH, "identifiers": "content.entry[0].resource"},
    )


def calls(caplog: pytest.LogCaptureFixture, method: str) -> int:
    return answered_calls(caplog, f"healthbank.identity.v1.IdentityService/{method}")


@pytest.fixture
async def resolver(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[GrpcIdentityResolver]:
    """Ingest's identity client, talking to identity (and identity's audit) over real gRPC;
    the access log captured at INFO."""
    caplog.set_level(logging.INFO, logger="healthbank.rpc.access")
    async with AsyncExitStack() as exits:
        running = RunningServices(exits)
        await running.start("audit", open_audit(settings))
        await running.start(
            "identity", open_identity(settings, clients=running.clients(settings, "identity"))
        )
        yield GrpcIdentityResolver(running.clients(settings, "ingest"))


async def test_concurrent_patients_share_calls_and_each_refusal_stays_its_own(
    resolver: GrpcIdentityResolver, caplog: pytest.LogCaptureFixture
) -> None:
    linked = await resolver.resolve(HOSPITAL, patient(1000, mrn="C-1"))

    # Alone (Resolve): a refusal of the content, pointed at where it came from.
    with pytest.raises(PatientRejected) as alone:
        await resolver.resolve(HOSPITAL, patient(1001, sex="robot"))

    # Together: the good patients, one with an invalid sex, and one whose record number
    # is already linked to someone else (another national ID).
    batch = [patient(n) for n in range(PATIENTS)]
    batch[5] = patient(5, sex="robot")
    batch[9] = patient(9, mrn="C-1", serial=900)
    before = calls(caplog, "ResolveBatch") + calls(caplog, "Resolve")
    outcomes = await asyncio.gather(
        *(resolver.resolve(HOSPITAL, p) for p in batch), return_exceptions=True
    )
    made = calls(caplog, "ResolveBatch") + calls(caplog, "Resolve") - before
    again = await resolver.resolve(HOSPITAL, patient(3))

    assert alone.value.reason == "IDENTITY_REJECTED" and not alone.value.precondition
    assert [field for field, _ in alone.value.violations] == [SEX_PATH]
    conflict, invalid = outcomes.pop(9), outcomes.pop(5)
    assert isinstance(invalid, PatientRejected) and isinstance(conflict, PatientRejected)
    assert invalid.violations == alone.value.violations
    assert conflict.precondition and conflict.reason == "MRN_LINKED_TO_OTHER_PERSON"
    assert linked not in outcomes
    # Every other patient is a person of their own, and the same person when asked again.
    assert all(isinstance(token, str) and len(token) == 64 for token in outcomes), outcomes
    assert len(set(outcomes)) == PATIENTS - 2 and again == outcomes[3]
    assert calls(caplog, "ResolveBatch") >= 1 and made < PATIENTS


HURRIED_REQUEST = "0123456789abcdef" * 2


async def test_one_callers_deadline_and_request_id_never_reach_the_batches_after_it(
    resolver: GrpcIdentityResolver, caplog: pytest.LogCaptureFixture
) -> None:
    # A hospital's Submit whose deadline has passed starts the batching; 60 more patients
    # arrive while its call is out. Before ADR 57 every later batch ran in that first
    # caller's context, as long as patients kept coming: ResolveBatch went out with its
    # spent deadline (timeout 0, DEADLINE_EXCEEDED for all 60) and its request id.
    async def hurried() -> str:
        inbound_deadline.set(time.monotonic() - 1.0)
        request_id_var.set(HURRIED_REQUEST)
        return await resolver.resolve(HOSPITAL, patient(3000))

    first = asyncio.create_task(hurried())
    await asyncio.sleep(0)  # its patient leaves alone, in a Resolve
    others = await asyncio.gather(
        *(resolver.resolve(HOSPITAL, patient(n)) for n in range(3001, 3061)),
        return_exceptions=True,
    )
    await asyncio.gather(first, return_exceptions=True)

    assert all(isinstance(token, str) for token in others), {type(o) for o in others}
    assert len(set(others)) == 60
    batches = [
        r.getMessage() for r in caplog.records if "IdentityService/ResolveBatch" in r.getMessage()
    ]
    assert batches and not any(HURRIED_REQUEST in line for line in batches)
