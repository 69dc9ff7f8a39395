"""`healthbank serve` runs a service on uvloop's event loop unless told otherwise (ADR 44)."""

from __future__ import annotations

import asyncio
import sys

import pytest
import uvloop

from healthbank.cli import run_on_event_loop
from healthbank.core.config import ConfigError, load_settings


async def loop_kind() -> type[asyncio.AbstractEventLoop]:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop())


def test_services_run_on_uvloop_by_default() -> None:
    settings = load_settings({})
    assert settings.event_loop == "uvloop"
    assert run_on_event_loop(loop_kind(), settings.event_loop) is uvloop.Loop


def test_asyncio_s_own_loop_when_chosen() -> None:
    settings = load_settings({"HEALTHBANK_EVENT_LOOP": "asyncio"})
    kind = run_on_event_loop(loop_kind(), settings.event_loop)
    assert not issubclass(kind, uvloop.Loop)


def test_without_uvloop_installed_asyncio_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    kind = run_on_event_loop(loop_kind(), "uvloop")
    assert not issubclass(kind, uvloop.Loop)


def test_an_unknown_event_loop_is_refused() -> None:
    with pytest.raises(ConfigError):
        load_settings({"HEALTHBANK_EVENT_LOOP": "trio"})
