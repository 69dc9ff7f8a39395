"""Run as ``python -m probe_main`` (the way ``python -m healthbank.cli serve ingest`` runs):
does a new parse worker inherit what the main module imported, or import it again?"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import probe_marker  # stands for healthbank.cli's imports

from services.ingest.parse_pool import ParsePool


def probe() -> tuple[int, int]:
    """In the worker: its pid, and the pid of the process that imported the marker."""
    return os.getpid(), probe_marker.IMPORTED_IN


if __name__ == "__main__":
    ParsePool(1)  # configures the fork server the workers come from
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(1, mp_context=context) as workers:
        worker, imported_in = workers.submit(probe).result()
    print("inherited" if imported_in != worker else "imported again")
