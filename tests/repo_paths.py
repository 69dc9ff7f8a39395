"""Where things are, for every test folder: the repository and the sample messages."""

from __future__ import annotations

import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MESSAGES = REPO / "tests" / "fixtures" / "messages"
HL7_SAMPLES = REPO / "tests" / "fixtures" / "hl7_samples"
"""HL7 v2 messages of public test suites (tools/fetch_hl7_samples.py; README there)."""


def message(name: str) -> bytes:
    """A sample hospital message of tests/fixtures/messages (see the README there)."""
    return (MESSAGES / name).read_bytes()


SYNTHEA_SAMPLE = REPO / "tests" / "fixtures" / "synthea-sample.zip"
"""Synthea 3.3.0 FHIR R4 output, as generated (tools/fixtures/synthea.py made it)."""


def synthea_bundles() -> dict[str, bytes]:
    """Every bundle of the Synthea sample by file name, bytes exactly as Synthea wrote them."""
    with zipfile.ZipFile(SYNTHEA_SAMPLE) as sample:
        return {name: sample.read(name) for name in sample.namelist()}
