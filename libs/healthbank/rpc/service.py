"""The skeleton every healthbank service's ``app.py`` is built on.

A service says only what differs: an ``assemble`` function that opens what it needs from
:class:`ServiceResources` (its own store, the shared record store, a cache, clients, keys,
a sealer, background work) and returns :class:`Serving` (the servicer, its readiness
dependencies, server options). :func:`service_opener` turns that into the service's
``open_service(settings, *, clients=None, now=None)``::

    open_service = service_opener(SERVICE, SERVICE_NAME, assemble)

    async with open_service(settings) as host:  # a not-yet-started ServiceHost
        await run_until_signal(host)

On exit the host is stopped (if it was started), then everything opened is closed in
reverse order; so is everything opened before a later open (or ``assemble``) failed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property, partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc.aio  # type: ignore[import-untyped, unused-ignore]

from healthbank.core.config import Settings
from healthbank.crypto import KeyProvider, Sealer, build_key_provider, build_sealer
from healthbank.records import RecordStore, open_record_store
from healthbank.rpc.clients import ClientFactory, service_client_factory
from healthbank.rpc.server import Checkable, ServiceHost, readiness_of
from healthbank.rpc.tls import server_credentials
from healthbank.storage.backends import Unopened, open_cache, open_store
from healthbank.storage.cache import Cache

__all__ = [
    "Assemble",
    "Clock",
    "OpenService",
    "ServiceResources",
    "Serving",
    "service_opener",
    "utc_now",
]


class Closable(Protocol):
    """A store (or anything) that is closed when the service closes."""

    async def close(self) -> None:
        """Release connections; unusable afterwards."""
        ...


StoreT = TypeVar("StoreT", bound=Closable)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The UTC wall clock: every service's default ``now``."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Serving:
    """What one service serves, as its ``assemble`` function returns it.

    ``add_to_server`` is the generated ``add_<Name>Servicer_to_server``; the host is ready
    while every ``readiness`` dependency's ``check()`` passes; ``options`` are extra grpc
    server arguments (e.g. a larger receive limit).
    """

    servicer: object
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    readiness: Sequence[Checkable]
    options: Sequence[tuple[str, Any]] = ()


class ServiceResources:
    """What a service is assembled from, each opened on first use and closed on exit.

    ``keys``, ``sealer`` and ``clients`` are built when first read; ``clients`` is the
    factory passed to ``open_service`` or else one calling as this service (closed on
    exit only then). The ``open_*`` methods and :meth:`run_in_background` register their
    close with the service, so exit undoes them in reverse order.
    """

    def __init__(
        self,
        service: str,
        settings: Settings,
        exits: AsyncExitStack,
        *,
        clients: ClientFactory | None,
        now: Clock,
    ) -> None:
        self.service = service
        self.settings = settings
        self.now = now
        self._exits = exits
        self._given_clients = clients

    @cached_property
    def keys(self) -> KeyProvider:
        """The key provider the settings select (contacts nothing until used)."""
        return build_key_provider(self.settings)

    @cached_property
    def sealer(self) -> Sealer:
        """The envelope sealer over :attr:`keys`."""
        return build_sealer(self.settings, self.keys)

    @cached_property
    def clients(self) -> ClientFactory:
        """Channels to the other services, every call carrying this service's own token."""
        if self._given_clients is not None:
            return self._given_clients
        factory = service_client_factory(self.settings, self.service)
        self._exits.push_async_callback(factory.close)
        return factory

    async def open_store(
        self, *, sqlite: Callable[[Path], Unopened[StoreT]], cassandra: str
    ) -> StoreT:
        """This service's own store (file ``<service>.db`` or keyspace ``<prefix>_<service>``).

        See :func:`healthbank.storage.backends.open_store` for ``sqlite`` and ``cassandra``.
        """
        store = await open_store(self.settings, self.service, sqlite=sqlite, cassandra=cassandra)
        self._exits.push_async_callback(store.close)
        return store

    async def open_record_store(self) -> RecordStore:
        """The shared hot record store."""
        records = await open_record_store(self.settings)
        self._exits.push_async_callback(records.close)
        return records

    async def open_cache(self, *, max_entries: int | None = None) -> Cache:
        """The cache the settings select; ``max_entries`` bounds what it keeps in process."""
        sizing = {} if max_entries is None else {"max_entries": max_entries}
        cache = await open_cache(self.settings, **sizing)
        self._exits.push_async_callback(cache.close)
        return cache

    def close_on_exit(self, close: Callable[[], Awaitable[None]]) -> None:
        """Await ``close()`` when the service closes (after the host has stopped)."""
        self._exits.push_async_callback(close)

    def run_in_background(self, name: str, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``work()`` as a task from now until the service closes (then it is cancelled)."""
        task = asyncio.create_task(work(), name=f"{self.service}-{name}")
        self._exits.push_async_callback(_cancel, task)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


Assemble = Callable[[ServiceResources], Awaitable[Serving]]


class OpenService(Protocol):
    """A service's ``open_service``: yields a not-yet-started host; closes all on exit."""

    def __call__(
        self,
        settings: Settings,
        *,
        clients: ClientFactory | None = None,
        now: Clock | None = None,
    ) -> AbstractAsyncContextManager[ServiceHost]:
        """``clients`` replaces the service's own factory (not closed on exit); ``now``
        replaces the UTC wall clock."""
        ...


def service_opener(service: str, service_name: str, assemble: Assemble) -> OpenService:
    """The ``open_service`` of the service ``service`` serving the proto ``service_name``."""

    @asynccontextmanager
    async def open_service(
        settings: Settings,
        *,
        clients: ClientFactory | None = None,
        now: Clock | None = None,
    ) -> AsyncIterator[ServiceHost]:
        async with AsyncExitStack() as exits:
            resources = ServiceResources(
                service, settings, exits, clients=clients, now=now or utc_now
            )
            serving = await assemble(resources)
            host = ServiceHost(
                service,
                settings,
                register=[partial(serving.add_to_server, serving.servicer)],
                service_names=[service_name],
                readiness=readiness_of(*serving.readiness),
                credentials=server_credentials(settings),
                options=serving.options,
            )
            # Pushed last, so it runs first: no call is in flight while things close.
            exits.push_async_callback(host.stop)
            yield host

    return open_service
