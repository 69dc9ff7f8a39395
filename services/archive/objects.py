"""Where the archive's bytes live: a flat object store keyed by path-like names.

The embedded default is a local directory (``<data_dir>/archive``); at scale, any
S3-compatible store through boto3 (ADR 31). Objects are written whole or not at all: a
reader never sees half a blob or half a segment. boto3 blocks, so every call runs in a
thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import errno
import hashlib
import os
import re
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar

from healthbank.core.config import Settings
from healthbank.core.files import write_durably
from healthbank.storage.errors import StorageRefused, StorageUnavailable

# Blocking S3 calls run here (I/O, not CPU: many threads are cheap), apart from the loop's
# default pool (min(32, cores + 4) threads) that the archive's CPU work uses.
_S3_CALLS = ThreadPoolExecutor(max_workers=32, thread_name_prefix="s3-call")
_T = TypeVar("_T")

# Keys are relative, slash-separated, made of safe characters, with no "." or ".." parts.
_KEY = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$")


class ObjectMissing(Exception):
    """No object is stored under the key."""


class ObjectStore(Protocol):
    """Durable, atomic whole-object storage."""

    async def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` durably; replaces atomically if present."""
        ...

    async def get(self, key: str) -> bytes:
        """The object's bytes; ObjectMissing if absent."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        ...

    def chunks(self, key: str, chunk_size: int) -> AsyncIterator[bytes]:
        """The object's bytes in chunks of at most ``chunk_size``; ObjectMissing if absent."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object under ``key``; nothing happens if there is none."""
        ...

    async def list_keys(self, prefix: str) -> list[str]:
        """Every key starting with ``prefix`` (e.g. ``"segments/"``), sorted."""
        ...

    async def check(self) -> None:
        """Raise unless the store is usable now (health checks)."""
        ...


def check_key(key: str) -> str:
    """``key`` if it is a relative name of safe characters; ValueError otherwise."""
    if not _KEY.match(key):
        raise ValueError("object keys are relative names of safe characters")
    return key


class LocalObjectStore:
    """ObjectStore in a local directory; keys map to files below ``root``."""

    def __init__(self, root: Path) -> None:
        """Store objects below ``root`` (created on first write)."""
        self.root = root

    def path_of(self, key: str) -> Path:
        """The file that holds ``key``."""
        return self.root / check_key(key)

    async def put(self, key: str, data: bytes) -> None:
        """See ObjectStore.put: temp file, fsync, rename, fsync the directory."""
        await _on_disk(write_durably, self.path_of(key), data)

    async def get(self, key: str) -> bytes:
        """See ObjectStore.get."""
        path = self.path_of(key)
        try:
            return await _on_disk(path.read_bytes)
        except FileNotFoundError:
            raise ObjectMissing(key) from None

    async def exists(self, key: str) -> bool:
        """See ObjectStore.exists."""
        return await _on_disk(self.path_of(key).is_file)

    async def chunks(self, key: str, chunk_size: int) -> AsyncIterator[bytes]:
        """See ObjectStore.chunks."""
        path = self.path_of(key)
        try:
            handle: BinaryIO = await _on_disk(path.open, "rb")
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        try:
            while chunk := await _on_disk(handle.read, chunk_size):
                yield chunk
        finally:
            close_off_loop(handle)

    async def delete(self, key: str) -> None:
        """See ObjectStore.delete."""
        await _on_disk(self.path_of(key).unlink, missing_ok=True)

    async def list_keys(self, prefix: str) -> list[str]:
        """See ObjectStore.list_keys (temporary files of unfinished writes are not objects)."""
        return await _on_disk(_list_files, self.root, prefix)

    async def check(self) -> None:
        """See ObjectStore.check: the root exists (or can be made) and is writable."""
        await _on_disk(_check_writable, self.root)


class S3ObjectStore:
    """ObjectStore in a bucket of an S3-compatible store, keys below ``prefix``.

    A PUT is atomic on S3 (a reader sees the old object or the new one), and its
    Content-MD5 makes the server refuse bytes damaged on the way. With ``lock_days`` the
    bucket's object lock keeps every version for that long (COMPLIANCE mode: not even the
    bucket's owner may delete it early); stores without object lock take ``lock_days=0``.
    """

    def __init__(self, client: Any, bucket: str, prefix: str = "", lock_days: int = 0) -> None:
        """Use a boto3 S3 ``client`` on ``bucket``; objects live below ``prefix``."""
        self._client = client
        self._bucket = bucket
        self._prefix = prefix
        self._lock_days = lock_days

    def _name(self, key: str) -> str:
        return self._prefix + check_key(key)

    async def put(self, key: str, data: bytes) -> None:
        """See ObjectStore.put."""
        request: dict[str, Any] = {"Bucket": self._bucket, "Key": self._name(key), "Body": data}
        if self._lock_days:
            request["ObjectLockMode"] = "COMPLIANCE"
            request["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(
                days=self._lock_days
            )

        def put() -> None:
            # Hashing a large blob is work for the worker thread, not the loop.
            digest = hashlib.md5(data).digest()
            self._client.put_object(**request, ContentMD5=base64.b64encode(digest).decode("ascii"))

        await _s3_call(put)

    async def get(self, key: str) -> bytes:
        """See ObjectStore.get."""
        name = self._name(key)

        def read() -> bytes:
            try:
                response = self._client.get_object(Bucket=self._bucket, Key=name)
            except self._client.exceptions.NoSuchKey:
                raise ObjectMissing(key) from None
            body: bytes = response["Body"].read()
            return body

        return await _s3_call(read)

    async def exists(self, key: str) -> bool:
        """See ObjectStore.exists."""
        name = self._name(key)

        def head() -> bool:
            try:
                self._client.head_object(Bucket=self._bucket, Key=name)
            except self._client.exceptions.ClientError as error:
                if _status_of(error) == 404:
                    return False
                raise
            return True

        return await _s3_call(head)

    async def chunks(self, key: str, chunk_size: int) -> AsyncIterator[bytes]:
        """See ObjectStore.chunks: one GET, its body read a chunk per thread hop."""
        name = self._name(key)

        def open_body() -> Any:
            try:
                return self._client.get_object(Bucket=self._bucket, Key=name)["Body"]
            except self._client.exceptions.NoSuchKey:
                raise ObjectMissing(key) from None

        # Shielded: a reader cancelled while the GET is in flight must still close the body
        # it returns, or its connection waits for the garbage collector.
        opening = asyncio.ensure_future(_s3_call(open_body))
        try:
            body = await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_close_late_body)
            raise
        try:
            while chunk := await _s3_call(lambda: body.read(chunk_size)):
                yield chunk
        finally:
            close_off_loop(body, _S3_CALLS)

    async def delete(self, key: str) -> None:
        """See ObjectStore.delete."""
        name = self._name(key)
        await _s3_call(lambda: self._client.delete_object(Bucket=self._bucket, Key=name))

    async def list_keys(self, prefix: str) -> list[str]:
        """See ObjectStore.list_keys."""

        def listing() -> list[str]:
            keys: list[str] = []
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=self._prefix + prefix
            )
            for page in pages:
                # Some stores list directory markers ("blobs/aa/"); no key ends in "/".
                names = [item["Key"] for item in page.get("Contents", [])]
                keys.extend(name[len(self._prefix) :] for name in names if not name.endswith("/"))
            return sorted(keys)

        return await _s3_call(listing)

    async def check(self) -> None:
        """See ObjectStore.check: the bucket answers."""
        await _s3_call(lambda: self._client.head_bucket(Bucket=self._bucket))


async def _s3_call(work: Callable[[], _T]) -> _T:
    """Run a blocking S3 call on the S3 threads, not the loop's default pool: a slow S3
    holds a thread for up to its timeouts, and the default pool's few threads are what
    segment decoding, sealing and hashing need meanwhile. S3's failures come back as the
    storage errors every store raises (:func:`_storage_error`)."""
    context = contextvars.copy_context()  # the caller's trace, as to_thread keeps it
    return await asyncio.get_running_loop().run_in_executor(
        _S3_CALLS, context.run, _with_storage_errors, work
    )


def _with_storage_errors(work: Callable[[], _T]) -> _T:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return work()
    except (BotoCoreError, ClientError) as error:
        raise _storage_error(error) from error


# S3 error codes of a request that cannot succeed as the deployment stands, and the cause
# StorageRefused names; and codes that may pass on retry although their status is a 4xx.
_REFUSED_CODES = {
    "AccessDenied": "UNAUTHORIZED",
    "InvalidAccessKeyId": "UNAUTHORIZED",
    "SignatureDoesNotMatch": "UNAUTHORIZED",
    "RequestTimeTooSkewed": "CONFIGURATION",
    "NoSuchBucket": "CONFIGURATION",
    "InvalidBucketName": "CONFIGURATION",
    "EntityTooLarge": "REQUEST_TOO_LARGE",
}
_TRANSIENT_CODES = frozenset({"BadDigest", "RequestTimeout", "SlowDown", "Throttling"})


def _storage_error(error: Exception) -> Exception:
    """An S3 failure as a storage error: transient ones (no connection, a timeout, a 5xx, a
    throttle, bytes damaged on the way) may succeed on retry; a refusal never will. The
    message names the error's type, code and status only: never a key or a bucket."""
    response = getattr(error, "response", None)
    if response is None:  # no answer at all: connecting, a timeout, a cut stream
        if type(error).__name__ in {"NoCredentialsError", "PartialCredentialsError"}:
            return StorageRefused(f"S3 {type(error).__name__}", cause="UNAUTHORIZED")
        return StorageUnavailable(f"S3 unreachable: {type(error).__name__}")
    code = str(response.get("Error", {}).get("Code", ""))
    status = _status_of(error)
    described = f"S3 answered {code or 'an error'} (HTTP {status})"
    if code in _REFUSED_CODES:
        return StorageRefused(described, cause=_REFUSED_CODES[code])
    if code in _TRANSIENT_CODES or status >= 500 or status in (408, 429) or status < 400:
        return StorageUnavailable(described)
    cause = "UNAUTHORIZED" if status in (401, 403) else "INVALID_QUERY"
    return StorageRefused(described, cause=cause)


def _close_late_body(opening: asyncio.Future[Any]) -> None:
    """Close the body of a GET whose reader was cancelled before it arrived."""
    if not opening.cancelled() and opening.exception() is None:
        close_off_loop(opening.result(), _S3_CALLS)


_SETTINGS = Settings.model_fields


@dataclass(frozen=True)
class S3Limits:
    """How long an S3 request may wait (to connect; for the next bytes of an answer) and
    how many times a transient failure is tried in all; by default the settings' own
    defaults (``archive_s3_*``), so the numbers live in one place."""

    connect_timeout_seconds: float = _SETTINGS["archive_s3_connect_timeout_seconds"].default
    read_timeout_seconds: float = _SETTINGS["archive_s3_read_timeout_seconds"].default
    max_attempts: int = _SETTINGS["archive_s3_max_attempts"].default

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Limits:
        """The limits ``settings`` configure."""
        return cls(
            settings.archive_s3_connect_timeout_seconds,
            settings.archive_s3_read_timeout_seconds,
            settings.archive_s3_max_attempts,
        )


def s3_client(
    endpoint_url: str | None,
    region: str,
    access_key_id: str,
    secret: str,
    limits: S3Limits | None = None,
) -> Any:
    """A boto3 S3 client; path-style addressing, which every S3-compatible store serves."""
    import boto3
    from botocore.config import Config

    limits = limits or S3Limits()
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret,
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=limits.connect_timeout_seconds,
            read_timeout=limits.read_timeout_seconds,
            # total_max_attempts counts the first try too (max_attempts would not).
            retries={"total_max_attempts": limits.max_attempts, "mode": "standard"},
            # Only send checksums an operation requires: older S3-compatible stores refuse
            # the CRC headers newer botocore adds by default.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def _status_of(error: Any) -> int:
    status: int = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return status


def _list_files(root: Path, prefix: str) -> list[str]:
    # Walk only the folder the prefix names ("segments/" of "segments/01"), not every blob.
    folder = root.joinpath(*prefix.split("/")[:-1])
    if not folder.is_dir() or not folder.resolve().is_relative_to(root.resolve()):
        return []
    keys = []
    for path in folder.rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            key = path.relative_to(root).as_posix()
            if key.startswith(prefix):
                keys.append(key)
    return sorted(keys)


async def _on_disk(work: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """Run a blocking file call of the local store on a worker thread; its OS failures come
    back as the storage errors every store raises (a missing file stays FileNotFoundError,
    which the caller answers as a missing object)."""
    try:
        return await asyncio.to_thread(work, *args, **kwargs)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise _disk_error(error) from error


# What a failing disk or directory says, by errno: a full or failing disk may be fine again
# later; a directory the service may not write, or no directory at all, is the deployment's
# to change; a file over the size limit never fits.
_DISK_REFUSALS = {
    errno.EACCES: "CONFIGURATION",
    errno.EPERM: "CONFIGURATION",
    errno.EROFS: "CONFIGURATION",
    errno.ENOTDIR: "CONFIGURATION",
    errno.EISDIR: "CONFIGURATION",
    errno.EFBIG: "REQUEST_TOO_LARGE",
}


def _disk_error(error: OSError) -> Exception:
    """An OS failure of the local store as a storage error, named by its errno only (its
    text would name the file)."""
    name = errno.errorcode.get(error.errno or 0, type(error).__name__)
    cause = _DISK_REFUSALS.get(error.errno or 0)
    if cause is None and isinstance(error, PermissionError):
        cause = "CONFIGURATION"
    if cause is not None:
        return StorageRefused(f"archive directory: {name}", cause=cause)
    return StorageUnavailable(f"archive directory: {name}")


def close_off_loop(handle: Any, executor: Executor | None = None) -> None:
    """Close a file or response body that a worker thread may still be reading (its reader
    was cancelled mid-read): closing waits for that read, up to the read's timeout, so it
    is done on a worker thread of ``executor`` (None: the loop's default) too, never on the
    event loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no loop (a generator finalized at exit): nothing to hold up
        handle.close()
        return
    loop.run_in_executor(executor, handle.close)


def _check_writable(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    if not os.access(root, os.W_OK):
        raise PermissionError("archive directory is not writable")
