"""How the archive's S3 object store fails: every S3 failure is a storage error the RPC layer
answers (UNAVAILABLE for what may pass on retry, a refusal for what never will), requests
give up after the configured timeouts, and a reader cancelled while its GET is in flight
still closes the body that GET returns."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from port_support import closed_port

from healthbank.core.config import load_settings
from healthbank.storage.errors import StorageRefused, StorageUnavailable
from services.archive.app import open_object_store
from services.archive.objects import S3Limits, S3ObjectStore, _storage_error, s3_client


def client_error(code: str, status: int) -> ClientError:
    response: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "PutObject")


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("SlowDown", 503),
        ("ServiceUnavailable", 503),
        ("InternalError", 500),
        ("RequestTimeout", 400),  # S3 answers an idle upload 400, and a retry may pass
        ("BadDigest", 400),  # bytes damaged on the way: sent again, they arrive whole
        ("TooManyRequests", 429),
    ],
)
def test_an_answer_that_may_pass_on_retry_is_unavailable(code: str, status: int) -> None:
    error = _storage_error(client_error(code, status))
    assert isinstance(error, StorageUnavailable)
    assert str(error) == f"S3 answered {code} (HTTP {status})"


@pytest.mark.parametrize(
    ("code", "status", "cause"),
    [
        ("AccessDenied", 403, "UNAUTHORIZED"),
        ("InvalidAccessKeyId", 403, "UNAUTHORIZED"),
        ("SignatureDoesNotMatch", 403, "UNAUTHORIZED"),
        ("SomethingNew", 401, "UNAUTHORIZED"),
        ("RequestTimeTooSkewed", 403, "CONFIGURATION"),
        ("NoSuchBucket", 404, "CONFIGURATION"),
        ("EntityTooLarge", 400, "REQUEST_TOO_LARGE"),
        ("InvalidArgument", 400, "INVALID_QUERY"),
    ],
)
def test_an_answer_that_never_passes_is_a_refusal(code: str, status: int, cause: str) -> None:
    error = _storage_error(client_error(code, status))
    assert isinstance(error, StorageRefused)
    assert error.cause == cause


def test_no_answer_at_all_is_unavailable_and_names_no_address() -> None:
    url = "http://127.0.0.1:9/healthbank-archive/archive/blobs/ab/abcdef"
    for failure in (
        EndpointConnectionError(endpoint_url=url),
        ReadTimeoutError(endpoint_url=url),
    ):
        error = _storage_error(failure)
        assert isinstance(error, StorageUnavailable)
        assert "127.0.0.1" not in str(error) and "blobs" not in str(error)


def test_the_settings_limit_every_request() -> None:
    settings = load_settings(
        {
            "HEALTHBANK_ARCHIVE_BACKEND": "s3",
            "HEALTHBANK_ARCHIVE_S3_ENDPOINT": "http://127.0.0.1:9",
            "HEALTHBANK_ARCHIVE_S3_CONNECT_TIMEOUT_SECONDS": "1.5",
            "HEALTHBANK_ARCHIVE_S3_READ_TIMEOUT_SECONDS": "7",
            "HEALTHBANK_ARCHIVE_S3_MAX_ATTEMPTS": "2",
        }
    )
    store = open_object_store(settings)
    assert isinstance(store, S3ObjectStore)
    config = store._client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (1.5, 7.0)
    assert config.retries["total_max_attempts"] == 2


def test_limits_left_unset_are_the_settings_defaults() -> None:
    defaults = load_settings({"HEALTHBANK_ARCHIVE_BACKEND": "s3"})
    assert S3Limits() == S3Limits.from_settings(defaults)


async def test_a_store_nobody_listens_on_is_unavailable() -> None:
    client = s3_client(f"http://127.0.0.1:{closed_port()}", "us-east-1", "key", "secret", FAST)
    store = S3ObjectStore(client, "bucket", "archive/")
    with pytest.raises(StorageUnavailable, match="S3 unreachable: EndpointConnectionError"):
        await store.put("blobs/ab/abc", b"bytes")
    with pytest.raises(StorageUnavailable):
        await store.check()


FAST = S3Limits(connect_timeout_seconds=1, read_timeout_seconds=0.5, max_attempts=1)


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A server that accepts connections and never answers (a store that hangs)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    for writer in held:
        writer.transport.abort()
    server.close()


async def test_a_store_that_never_answers_is_given_up_on_after_the_read_timeout(
    silent_server: int,
) -> None:
    client = s3_client(f"http://127.0.0.1:{silent_server}", "us-east-1", "key", "secret", FAST)
    store = S3ObjectStore(client, "bucket", "archive/")
    # botocore's own default would wait 60 s per attempt; the guard fails the test first.
    async with asyncio.timeout(30):
        with pytest.raises(StorageUnavailable, match="ReadTimeoutError"):
            await store.get("blobs/ab/abc")


class Body:
    def __init__(self) -> None:
        self.closed = threading.Event()

    def read(self, size: int) -> bytes:
        return b""

    def close(self) -> None:
        self.closed.set()


class SlowToAnswerClient:
    """A boto3 client stand-in whose GET answers only once the test lets it."""

    class exceptions:  # boto3's attribute name
        class NoSuchKey(Exception):
            pass

    def __init__(self) -> None:
        self.asked = threading.Event()
        self.answer = threading.Event()
        self.body = Body()

    def get_object(self, **_: Any) -> dict[str, Any]:
        self.asked.set()
        self.answer.wait(timeout=30)
        return {"Body": self.body}


async def test_a_reader_cancelled_while_its_get_is_in_flight_closes_the_body_it_returns() -> None:
    client = SlowToAnswerClient()
    store = S3ObjectStore(client, "bucket")

    async def read_all() -> list[bytes]:
        return [chunk async for chunk in store.chunks("blobs/ab/abc", 1024)]

    reader = asyncio.ensure_future(read_all())
    assert await asyncio.to_thread(client.asked.wait, 30)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    client.answer.set()  # the GET returns after its reader is gone
    assert await asyncio.to_thread(client.body.closed.wait, 30)
