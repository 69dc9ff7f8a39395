"""`healthbank ingest PATH…`: load files, folders and zips into ingest over SubmitStream.

Every file is one message; its format comes from its name (:data:`FORMATS_BY_SUFFIX`):
``.json`` FHIR R4 (a Bundle or a resource), ``.ndjson`` FHIR Bulk Data NDJSON, ``.hl7`` /
``.er7`` HL7 v2, ``.dcm`` DICOM. Folders are walked recursively and zips read member by
member, both in name order; files of other types are listed as skipped. Contents are read
one at a time as the stream needs them, so a large load does not sit in memory.

NDJSON is the exception: a Bulk Data export has one file per resource type with many
patients in each, while ingest takes one patient per message. All NDJSON files of a load
are read together and regrouped (:func:`group_ndjson`): one message per Patient with every
resource referring to it (``subject``, ``patient`` or ``beneficiary``), one message of the
directory resources, and the resources that refer to no Patient of the load reported as
skipped.

The loader calls as the hospital's integration engine (a HOSPITAL_ENGINE principal of
``--hospital``). A message's id is its file name plus a hash of its bytes
(:func:`message_id_for`), so loading the same files again answers DUPLICATE and stores
nothing twice. Rejections that are retryable (an engine or service briefly unavailable) are
sent again, up to :data:`ATTEMPTS` times in all; permanent ones are reported with their
reason and first field violations.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import zipfile
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from healthbank.common.v1 import common_pb2
from healthbank.contracts.fhir import DIRECTORY_RESOURCE_TYPES, group_by_patient
from healthbank.contracts.principal import Principal, PrincipalKind, encode_token
from healthbank.core.config import Settings
from healthbank.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from healthbank.rpc.clients import ClientFactory

FORMATS_BY_SUFFIX: dict[str, common_pb2.SourceFormat] = {
    ".json": common_pb2.SOURCE_FORMAT_FHIR_R4_JSON,
    ".ndjson": common_pb2.SOURCE_FORMAT_FHIR_R4_NDJSON,
    ".hl7": common_pb2.SOURCE_FORMAT_HL7V2,
    ".er7": common_pb2.SOURCE_FORMAT_HL7V2,
    ".dcm": common_pb2.SOURCE_FORMAT_DICOM,
}
ATTEMPTS = 3
RETRY_DELAY_SECONDS = 2.0
STREAM_TIMEOUT_SECONDS = 3600.0
MAX_ACK_BYTES = 64 * 1024 * 1024
# Content per SubmitStream request: a larger file goes in pieces (ingest joins them).
PIECE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Source:
    """One file to submit: where it is (``path`` or ``path!member`` of a zip) and how to read it."""

    name: str
    format: common_pb2.SourceFormat
    read: Callable[[], bytes] = field(repr=False)


@dataclass
class FileOutcome:
    """What ingest answered for one file."""

    name: str
    outcome: str  # STORED, DUPLICATE, REJECTED, PARTIAL (some patients rejected), SKIPPED
    reason: str = ""
    detail: str = ""
    records: int = 0
    retryable: bool = False
    unidentified: bool = False  # stored under a placeholder patient (DICOM without PatientID)


@dataclass
class LoadReport:
    """The outcome of every message (or skipped file), and the totals ``--json`` prints.

    ``files`` is how many files were found (NDJSON files are regrouped into messages).
    """

    outcomes: list[FileOutcome] = field(default_factory=list)
    files: int | None = None

    def summary(self) -> dict[str, object]:
        """{"files", "messages", "accepted", "rejected", "partial", "reasons": {reason: count},
        ...}; ``partial`` counts messages of several patients some of whom were rejected (their
        first rejected patient's reason is in ``reasons``); ``unidentified`` counts messages
        stored now under a placeholder patient."""
        submitted = [o for o in self.outcomes if o.outcome != "SKIPPED"]
        rejected = [o for o in submitted if o.outcome == "REJECTED"]
        partial = [o for o in submitted if o.outcome == "PARTIAL"]
        return {
            "files": len(self.outcomes) if self.files is None else self.files,
            "messages": len(submitted),
            "accepted": len(submitted) - len(rejected) - len(partial),
            "rejected": len(rejected),
            "partial": len(partial),
            "reasons": dict(sorted(Counter(o.reason for o in rejected + partial).items())),
            "skipped": len(self.outcomes) - len(submitted),
            "records": sum(o.records for o in submitted if o.outcome in ("STORED", "PARTIAL")),
            "unidentified": sum(o.unidentified for o in submitted if o.outcome == "STORED"),
        }


def message_id_for(name: str, content: bytes) -> str:
    """The message id a file is submitted under: stable across runs, unique per content."""
    return f"{Path(name).name[:180]}:{hashlib.sha256(content).hexdigest()[:32]}"


def discover(paths: Iterable[Path]) -> Iterator[Source | FileOutcome]:
    """Every file under ``paths`` as a Source, or a SKIPPED outcome for unknown types."""
    for path in paths:
        if path.is_dir():
            yield from discover(sorted(p for p in path.rglob("*") if p.is_file()))
        elif path.suffix.lower() == ".zip":
            yield from _zip_members(path)
        else:
            yield _source(str(path), path.suffix.lower(), path.read_bytes)


def _zip_members(path: Path) -> Iterator[Source | FileOutcome]:
    with zipfile.ZipFile(path) as archive:
        names = sorted(info.filename for info in archive.infolist() if not info.is_dir())

    def reader(member: str) -> Callable[[], bytes]:
        def read() -> bytes:
            with zipfile.ZipFile(path) as archive:
                return archive.read(member)

        return read

    for member in names:
        yield _source(f"{path}!{member}", Path(member).suffix.lower(), reader(member))


def _source(name: str, suffix: str, read: Callable[[], bytes]) -> Source | FileOutcome:
    source_format = FORMATS_BY_SUFFIX.get(suffix)
    if source_format is None:
        return FileOutcome(name, "SKIPPED", detail="unknown file type")
    return Source(name, source_format, read)


def group_ndjson(sources: list[Source]) -> tuple[list[Source], list[FileOutcome]]:
    """NDJSON files regrouped into one message per Patient, plus one of directory resources.

    Returns the messages (as in-memory Sources named ``<first file>#Patient/<id>``) and a
    SKIPPED outcome per resource that refers to no Patient of the load (or is not JSON).
    Whose each resource is: :func:`healthbank.contracts.fhir.group_by_patient`.
    """
    resources: list[dict[str, Any]] = []
    lines: list[bytes] = []
    places: list[str] = []  # file:line of each resource
    directory: list[bytes] = []
    skipped: list[FileOutcome] = []
    first = sources[0].name if sources else ""
    for source in sources:
        for number, line in enumerate(source.read().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                resource = json.loads(line)
            except ValueError:
                skipped.append(FileOutcome(f"{source.name}:{number}", "SKIPPED", detail="not JSON"))
                continue
            if not isinstance(resource, dict):
                resource = {}
            if resource.get("resourceType") in DIRECTORY_RESOURCE_TYPES:
                directory.append(line)
                continue
            resources.append(resource)
            lines.append(line)
            places.append(f"{source.name}:{number}")
    groups, nobodys = group_by_patient(resources, [""] * len(resources))
    for index in nobodys:
        skipped.append(
            FileOutcome(places[index], "SKIPPED", detail="refers to no Patient of the load")
        )
    messages = [("directory", directory)] if directory else []
    messages += [
        (f"Patient/{resources[group[0]].get('id')}", [lines[index] for index in group])
        for group in groups
    ]
    grouped = [
        Source(
            f"{first}#{label}",
            common_pb2.SOURCE_FORMAT_FHIR_R4_NDJSON,
            _constant(b"\n".join(members) + b"\n"),
        )
        for label, members in messages
    ]
    return grouped, skipped


def _constant(content: bytes) -> Callable[[], bytes]:
    return lambda: content


def hospital_engine_token(settings: Settings, hospital_id: str) -> Callable[[], str]:
    """Mints the development token of ``hospital_id``'s integration engine (ADR 5)."""
    engine = Principal(PrincipalKind.HOSPITAL_ENGINE, f"{hospital_id}-engine", hospital_id)
    secret = settings.auth_secret.get_secret_value().encode()
    return lambda: encode_token(engine, secret, ttl_seconds=300)


class Progress:
    """A one-line progress bar on a terminal's stderr; silent when stderr is not a tty."""

    def __init__(self, total: int, stream: TextIO) -> None:
        """Count to ``total`` files on ``stream``."""
        self._total = max(total, 1)
        self._stream = stream
        self._enabled = stream.isatty()
        self._done = 0

    def step(self, outcome: FileOutcome) -> None:
        """One more file answered."""
        self._done += 1
        if self._enabled:
            filled = 30 * self._done // self._total
            self._stream.write(
                f"\r[{'#' * filled}{'.' * (30 - filled)}] {self._done}/{self._total} files"
            )
            self._stream.flush()

    def close(self) -> None:
        """End the bar's line."""
        if self._enabled:
            self._stream.write("\n")
            self._stream.flush()


async def load(
    sources: list[Source],
    hospital_id: str,
    clients: ClientFactory,
    progress: Progress,
    *,
    retry_delay: float = RETRY_DELAY_SECONDS,
) -> list[FileOutcome]:
    """Submit every source over SubmitStream; retry retryable rejections; one outcome each."""
    outcomes: dict[str, FileOutcome] = {}
    pending = sources
    for attempt in range(ATTEMPTS):
        if attempt:
            await asyncio.sleep(retry_delay)
        answered = await _stream(pending, hospital_id, clients)
        outcomes.update((o.name, o) for o in answered)
        retry = {o.name for o in answered if o.retryable}
        for outcome in answered:
            if outcome.name not in retry or attempt == ATTEMPTS - 1:
                progress.step(outcome)
        pending = [source for source in pending if source.name in retry]
        if not pending:
            break
    return [outcomes[source.name] for source in sources]


def message_pieces(
    hospital_id: str,
    message_id: str,
    source_format: int,
    content: bytes,
    piece_bytes: int = PIECE_BYTES,
) -> list[ingest_pb2.SubmitRequest]:
    """One message as SubmitStream requests: pieces of at most ``piece_bytes`` of content,
    each but the last marked ``more_content`` (a file larger than one request still goes)."""
    starts = range(0, max(len(content), 1), piece_bytes)
    return [
        ingest_pb2.SubmitRequest(
            hospital_id=hospital_id,
            message_id=message_id,
            format=source_format,  # type: ignore[arg-type]
            content=content[start : start + piece_bytes],
            more_content=start + piece_bytes < len(content),
        )
        for start in starts
    ]


async def _stream(
    sources: list[Source], hospital_id: str, clients: ClientFactory
) -> list[FileOutcome]:
    stub = ingest_pb2_grpc.IngestServiceStub(clients.channel("ingest"))
    sent: list[str] = []

    async def requests() -> AsyncIterator[ingest_pb2.SubmitRequest]:
        for source in sources:
            content = source.read()
            sent.append(source.name)
            message_id = message_id_for(source.name, content)
            for piece in message_pieces(hospital_id, message_id, source.format, content):
                yield piece

    answered: list[FileOutcome] = []
    call = stub.SubmitStream(requests(), timeout=STREAM_TIMEOUT_SECONDS)
    async for response in call:
        answered.append(_file_outcome(sent[len(answered)], response))
    return answered


def _file_outcome(name: str, response: ingest_pb2.SubmitResponse) -> FileOutcome:
    if response.outcome == ingest_pb2.OUTCOME_REJECTED:
        rejection = response.rejection
        return FileOutcome(
            name,
            "REJECTED",
            reason=rejection.reason,
            detail=_rejection_detail(rejection),
            retryable=rejection.retryable,
        )
    if response.outcome == ingest_pb2.OUTCOME_PARTIALLY_STORED:
        refused = [p for p in response.patients if p.outcome == ingest_pb2.OUTCOME_REJECTED]
        stored = len(response.patients) - len(refused)
        detail = f"{stored} of {len(response.patients)} patients stored; " + "; ".join(
            f"{part.message_id.rpartition('#')[2]}: {part.rejection.reason}"
            f" {_rejection_detail(part.rejection)}"
            for part in refused
        )
        return FileOutcome(
            name,
            "PARTIAL",
            reason=refused[0].rejection.reason,
            detail=detail,
            records=len(response.record_names),
        )
    outcome = "DUPLICATE" if response.outcome == ingest_pb2.OUTCOME_DUPLICATE else "STORED"
    directory = sum(
        r.disposition == ingest_pb2.RESOURCE_DISPOSITION_DIRECTORY for r in response.resources
    )
    detail = f"{len(response.record_names)} records"
    if directory:
        detail += f", {directory} directory entries"
    if response.patient_unidentified:
        detail += ", patient unidentified"
    return FileOutcome(
        name,
        outcome,
        detail=detail,
        records=len(response.record_names),
        unidentified=response.patient_unidentified,
    )


def _rejection_detail(rejection: ingest_pb2.Rejection) -> str:
    violations = "; ".join(
        f"{v.field}: {v.description}" for v in list(rejection.field_violations)[:3]
    )
    if not violations:
        return rejection.message
    more = len(rejection.field_violations) - 3
    return rejection.message + f" ({violations}" + (f"; {more} more)" if more > 0 else ")")


def format_report(report: LoadReport) -> str:
    """Per-file outcomes, then the summary table."""
    lines = [
        f"{o.outcome:<9} {o.name}"
        + (f"  {o.reason}" if o.reason else "")
        + (f"  {o.detail}" if o.detail else "")
        for o in report.outcomes
    ]
    summary = report.summary()
    reasons = summary["reasons"]
    assert isinstance(reasons, dict)
    rows = [
        (key, str(summary[key]))
        for key in (
            "files",
            "messages",
            "accepted",
            "rejected",
            "partial",
            "skipped",
            "records",
            "unidentified",
        )
    ]
    rows += [(f"  {reason}", str(count)) for reason, count in reasons.items()]
    width = max(len(key) for key, _ in rows)
    lines += ["", f"{'':<{width}}  total"]
    lines += [f"{key:<{width}}  {value:>5}" for key, value in rows]
    return "\n".join(lines)


async def run_ingest(
    settings: Settings,
    paths: list[Path],
    hospital_id: str,
    *,
    address: str | None = None,
    stderr: TextIO = sys.stderr,
) -> LoadReport:
    """Discover, submit and report: what `healthbank ingest` does."""
    found = list(discover(paths))
    sources = [item for item in found if isinstance(item, Source)]
    report = LoadReport([item for item in found if isinstance(item, FileOutcome)], len(found))
    ndjson = [s for s in sources if s.format == common_pb2.SOURCE_FORMAT_FHIR_R4_NDJSON]
    if ndjson:
        grouped, unplaced = group_ndjson(ndjson)
        sources = [s for s in sources if s not in ndjson] + grouped
        report.outcomes += unplaced
    progress = Progress(len(sources), stderr)
    clients = ClientFactory(
        settings,
        token=hospital_engine_token(settings, hospital_id),
        addresses={"ingest": address} if address else None,
        default_timeout=STREAM_TIMEOUT_SECONDS,
        # An ack lists every resource of its message: large bundles have large acks.
        options=[("grpc.max_receive_message_length", MAX_ACK_BYTES)],
    )
    try:
        report.outcomes += await load(sources, hospital_id, clients, progress)
    finally:
        progress.close()
        await clients.close()
    return report


def report_json(report: LoadReport) -> str:
    """The ``--json`` output."""
    return json.dumps(report.summary(), sort_keys=True)
