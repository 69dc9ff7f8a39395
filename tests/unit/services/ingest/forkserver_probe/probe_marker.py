"""Remembers which process imported it."""

import os

IMPORTED_IN = os.getpid()
