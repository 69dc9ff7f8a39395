"""Fetch HL7 v2 sample messages from public test suites and extract them as fixtures.

    python tools/fetch_hl7_samples.py [--out tests/fixtures/hl7_samples]

Sources (pinned versions, through the registries' own clients: ``pip download`` and
``npm pack``): python-hl7 and hl7apy sdists from PyPI (messages are string literals in their
tests, read with ``ast``, never executed), simple-hl7 and hl7-standard from npm (``.hl7``
files). Only clinical message types a hospital submits are kept (ADT, ORU, ORM, OML, VXU,
MDM); queries, responses and ACKs are not hospital data. Each message becomes one
``<source>/<name>.er7`` file with CR segment separators, byte for byte as the suite sends it
otherwise. tests/fixtures/hl7_samples/README.md names each source, version and licence.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "tests" / "fixtures" / "hl7_samples"

PYPI_SOURCES = {"python-hl7": ("hl7", "0.4.5"), "hl7apy": ("hl7apy", "1.3.5")}
NPM_SOURCES = {"simple-hl7": "3.3.0", "hl7-standard": "1.0.4"}
CLINICAL_TYPES = ("ADT", "ORU", "ORM", "OML", "VXU", "MDM")
_MESSAGE_TYPE = re.compile(r"^MSH(.)[^\r\n]*")


def message_type(message: str) -> str:
    """MSH-9.1 of an ER7 message, or empty."""
    match = _MESSAGE_TYPE.match(message)
    if match is None:
        return ""
    fields = match.group(0).split(match.group(1))
    return fields[8].split(fields[1][:1] or "^")[0] if len(fields) > 8 and fields[1] else ""


def messages_in_python(source: str) -> Iterator[str]:
    """Complete messages among a test module's string literals (and their CR-joins)."""
    for node in ast.walk(ast.parse(source)):
        text = _literal_text(node)
        if text is not None and text.startswith("MSH") and "\rPID" in text.replace("\n", "\r"):
            yield text


def _literal_text(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    # "\r".join([...literals...]), as python-hl7's samples are written.
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "join"
        and isinstance(node.func.value, ast.Constant)
        and len(node.args) == 1
        and isinstance(node.args[0], ast.List | ast.Tuple)
    ):
        parts = [_literal_text(element) for element in node.args[0].elts]
        if all(isinstance(part, str) for part in parts):
            return str(node.func.value.value).join(part for part in parts if part is not None)
    return None


def split_batch(text: str) -> list[str]:
    """The messages of a file: one per MSH, batch header and trailer segments dropped."""
    segments = [s for s in re.split(r"\r\n|\r|\n", text) if s.strip()]
    messages: list[list[str]] = []
    for segment in segments:
        if segment[:3] in ("FHS", "BHS", "BTS", "FTS"):
            continue
        if segment.startswith("MSH"):
            messages.append([])
        if messages:
            messages[-1].append(segment)
    return ["\r".join(message) + "\r" for message in messages]


def _pypi(work: Path, name: str, version: str) -> list[tuple[str, str]]:
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "-q", "--no-deps"),
            *("--no-binary", ":all:", "--no-build-isolation", "-d", str(work)),
            f"{name}=={version}",
        ],
        check=True,
    )
    found: list[tuple[str, str]] = []
    with tarfile.open(next(work.glob(f"{name}-{version}.tar.gz"))) as sdist:
        for member in sdist.getmembers():
            if "/tests/" not in member.name or not member.name.endswith(".py"):
                continue
            handle = sdist.extractfile(member)
            if handle is None:
                continue
            stem = Path(member.name).stem
            for index, text in enumerate(messages_in_python(handle.read().decode())):
                found.extend((f"{stem}_{index}", message) for message in split_batch(text))
    return found


def _npm(work: Path, name: str, version: str) -> list[tuple[str, str]]:
    subprocess.run(["npm", "pack", "-s", f"{name}@{version}"], cwd=work, check=True)
    found: list[tuple[str, str]] = []
    with tarfile.open(work / f"{name}-{version}.tgz") as package:
        for member in package.getmembers():
            if not member.name.endswith((".hl7", ".txt")) or "/test" not in member.name:
                continue
            handle = package.extractfile(member)
            if handle is None:
                continue
            text = handle.read().decode("utf-8", errors="replace")
            stem = Path(member.name).stem + ("_txt" if member.name.endswith(".txt") else "")
            for index, message in enumerate(split_batch(text)):
                found.append((f"{stem}_{index}", message))
    return found


def main(argv: list[str] | None = None) -> int:
    """Fetch every source and write its clinical messages under ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        collected: dict[str, list[tuple[str, str]]] = {}
        for source, (name, version) in PYPI_SOURCES.items():
            collected[source] = _pypi(work, name, version)
        for source, version in NPM_SOURCES.items():
            collected[source] = _npm(work, source, version)
    for source, messages in collected.items():
        folder = args.out / source
        folder.mkdir(parents=True, exist_ok=True)
        seen: set[str] = set()
        for stem, message in messages:
            if message_type(message) not in CLINICAL_TYPES or message in seen:
                continue
            seen.add(message)
            (folder / f"{stem}.er7").write_bytes(message.encode())
        print(f"{source}: {len(seen)} messages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
