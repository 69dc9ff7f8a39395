"""`healthbank committee …` and `healthbank research …` (ADR 26): the data security
committee's and researchers' commands, as readable tables.

    healthbank committee list [--state S]           the docket, newest first
    healthbank committee show NAME                  one request: screening, votes, decision
    healthbank committee vote NAME CHOICE [-m TEXT] approve | reject | veto
    healthbank research submit --purpose … …        file a request (screened at once)
    healthbank research status NAME                 a request or a grant with its budget
    healthbank research aggregate GRANT --kind …    one noisy aggregate from the black room
    healthbank research synthesize GRANT --out F    a synthetic cohort and its reports

Calls go to consent (HEALTHBANK_CONSENT_ADDR) and ai-alert (HEALTHBANK_AI_ALERT_ADDR) with
``--token`` (or HEALTHBANK_TOKEN); without one, a development token of a committee member
or researcher named by ``--as`` is minted from HEALTHBANK_AUTH_SECRET.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from healthbank.core.config import Settings, load_settings

__all__ = ["add_commands", "table"]

_STATES = {
    "under-review": 1,
    "rejected-by-screening": 2,
    "approved": 3,
    "rejected": 4,
}
_STATE_NAMES = {number: name for name, number in _STATES.items()}
_CHOICES = {"approve": 1, "reject": 2, "veto": 3}
_CHOICE_NAMES = {number: name for name, number in _CHOICES.items()}
_KINDS = {"count": 1, "sum": 2, "mean": 3, "quantiles": 4, "histogram": 5}
_OUTPUTS = {"aggregates": 1, "synthetic": 2}


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Rows under headers, columns padded to their widest cell."""
    cells = [[str(value) for value in row] for row in rows]
    widths = [
        max([len(header)] + [len(row[index]) for row in cells])
        for index, header in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * width for width in widths))
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def add_commands(commands: Any) -> None:
    """Add ``committee`` and ``research`` to the `healthbank` parser's subcommands."""
    committee = commands.add_parser(
        "committee", help="the data security committee: review and vote on research requests"
    ).add_subparsers(dest="committee_command", required=True)
    listing = committee.add_parser("list", help="research requests, newest first")
    listing.add_argument("--state", choices=sorted(_STATES))
    _common(listing, "committee")
    listing.set_defaults(run=_run(_committee_list))
    show = committee.add_parser("show", help="one request with its screening, votes, decision")
    show.add_argument("name", help="researchRequests/{id}")
    _common(show, "committee")
    show.set_defaults(run=_run(_show))
    vote = committee.add_parser("vote", help="vote on a request")
    vote.add_argument("name", help="researchRequests/{id}")
    vote.add_argument("choice", choices=sorted(_CHOICES))
    vote.add_argument("-m", "--comment", default="", help="required to reject or veto")
    _common(vote, "committee")
    vote.set_defaults(run=_run(_vote))

    research = commands.add_parser(
        "research", help="research without seeing anyone: requests, aggregates, synthetic data"
    ).add_subparsers(dest="research_command", required=True)
    submit = research.add_parser("submit", help="file a research request with the committee")
    submit.add_argument("--purpose", required=True)
    submit.add_argument("--protocol", required=True)
    submit.add_argument("--ethics", default="", help="the ethics approval reference")
    submit.add_argument("--code-system", default="http://hl7.org/fhir/sid/icd-10")
    submit.add_argument("--codes", required=True, help="comma-separated cohort codes")
    submit.add_argument("--fields", required=True, help="comma-separated extract fields")
    submit.add_argument("--groupings", default="", help="comma-separated fields to group by")
    submit.add_argument("--output", choices=sorted(_OUTPUTS), default="aggregates")
    submit.add_argument("--from", dest="period_start", required=True, help="YYYY-MM-DD")
    submit.add_argument("--until", dest="period_end", required=True, help="YYYY-MM-DD")
    submit.add_argument("--access-until", required=True, help="YYYY-MM-DD")
    submit.add_argument("--epsilon", type=float, default=1.0, help="privacy budget")
    submit.add_argument("--request-id", default="", help="idempotency key (default: new)")
    _common(submit, "researcher")
    submit.set_defaults(run=_run(_submit))
    status = research.add_parser("status", help="a request, or a grant and its budget")
    status.add_argument("name", help="researchRequests/{id} or researchGrants/{id}")
    _common(status, "researcher")
    status.set_defaults(run=_run(_status))
    aggregate = research.add_parser("aggregate", help="one noisy aggregate under a grant")
    aggregate.add_argument("grant", help="researchGrants/{id}")
    aggregate.add_argument("--kind", choices=sorted(_KINDS), default="count")
    aggregate.add_argument("--field", default="")
    aggregate.add_argument("--group-by", default="", help="comma-separated")
    aggregate.add_argument("--quantiles", default="", help="comma-separated levels")
    aggregate.add_argument("--bins", default="", help="comma-separated bin edges")
    aggregate.add_argument("--epsilon", type=float, default=0.0, help="0: the default")
    _common(aggregate, "researcher")
    aggregate.set_defaults(run=_run(_aggregate))
    synthesize = research.add_parser("synthesize", help="a synthetic cohort under a grant")
    synthesize.add_argument("grant", help="researchGrants/{id}")
    synthesize.add_argument("--out", required=True, help="file to write the cohort to")
    synthesize.add_argument("--format", choices=["csv", "parquet"], default="csv")
    synthesize.add_argument("--rows", type=int, default=0, help="0: as many as the cohort")
    synthesize.add_argument("--seed", type=int, default=0)
    _common(synthesize, "researcher")
    synthesize.set_defaults(run=_run(_synthesize))


def _common(parser: argparse.ArgumentParser, kind: str) -> None:
    parser.add_argument(
        "--token",
        default=os.environ.get("HEALTHBANK_TOKEN"),
        help="bearer token (default: HEALTHBANK_TOKEN, else a development token)",
    )
    parser.add_argument(
        "--as",
        dest="subject",
        default=os.environ.get("HEALTHBANK_PRINCIPAL_SUBJECT", os.environ.get("USER", kind)),
        help=f"the {kind} a development token names (default: HEALTHBANK_PRINCIPAL_SUBJECT)",
    )
    parser.set_defaults(kind=kind)


Command = Callable[
    [argparse.Namespace, Settings, tuple[tuple[str, str], ...]], Coroutine[Any, Any, int]
]


def _run(command: Command) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        import grpc.aio

        from healthbank.rpc.errors import error_details

        settings = load_settings()
        try:
            return asyncio.run(command(args, settings, _credentials(args, settings)))
        except grpc.aio.AioRpcError as error:
            details = error_details(error)
            print(
                f"refused: {details.code.name} {details.reason}: {details.message}",
                file=sys.stderr,
            )
            for field, description in details.field_violations:
                print(f"  {field}: {description}", file=sys.stderr)
            return 1

    return run


def _credentials(args: argparse.Namespace, settings: Settings) -> tuple[tuple[str, str], ...]:
    from healthbank.contracts.principal import Principal, PrincipalKind, Purpose, encode_token

    kind = PrincipalKind.COMMITTEE if args.kind == "committee" else PrincipalKind.RESEARCHER
    purpose = Purpose.OPERATIONS if args.kind == "committee" else Purpose.RESEARCH
    token = args.token or encode_token(
        Principal(kind, args.subject, purpose=purpose),
        settings.auth_secret.get_secret_value().encode(),
    )
    return (("authorization", f"Bearer {token}"),)


def _consent(settings: Settings) -> tuple[Any, Any]:
    from healthbank.consent.v1 import consent_pb2_grpc
    from healthbank.rpc.clients import open_channel

    channel = open_channel(settings.consent_addr)
    return channel, consent_pb2_grpc.ConsentServiceStub(channel)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _day(text: str) -> Any:
    from google.protobuf import timestamp_pb2

    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC))
    return stamp


def _when(stamp: Any) -> str:
    if not stamp.seconds:
        return "-"
    return str(stamp.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M"))


async def _committee_list(
    args: argparse.Namespace, settings: Settings, metadata: tuple[tuple[str, str], ...]
) -> int:
    from healthbank.consent.v1 import consent_pb2

    channel, stub = _consent(settings)
    async with channel:
        response = await stub.ListResearchRequests(
            consent_pb2.ListResearchRequestsRequest(
                state=_STATES.get(args.state or "", 0)  # type: ignore[arg-type]
            ),
            metadata=metadata,
        )
    rows = [
        (
            request.name,
            _STATE_NAMES.get(request.state, "?"),
            request.researcher_id,
            len(request.votes),
            request.purpose[:50],
            _when(request.create_time),
        )
        for request in response.research_requests
    ]
    print(table(("request", "state", "researcher", "votes", "purpose", "filed"), rows))
    return 0


def _print_request(request: Any) -> None:
    print(
        table(
            ("request", "state", "researcher", "output", "epsilon", "grant"),
            [
                (
                    request.name,
                    _STATE_NAMES.get(request.state, "?"),
                    request.researcher_id,
                    {1: "aggregates", 2: "synthetic"}.get(request.output_kind, "?"),
                    f"{request.epsilon_budget:g}",
                    request.grant_name or "-",
                )
            ],
        )
    )
    print(f"purpose: {request.purpose}")
    print(f"fields: {', '.join(request.fields)}; groupings: {', '.join(request.groupings) or '-'}")
    if request.screening_findings:
        print()
        print(
            table(
                ("screening rule", "detail"),
                [(finding.rule, finding.detail) for finding in request.screening_findings],
            )
        )
    if request.votes:
        print()
        print(
            table(
                ("member", "vote", "comment", "cast"),
                [
                    (v.member_id, _CHOICE_NAMES.get(v.choice, "?"), v.comment, _when(v.cast_time))
                    for v in request.votes
                ],
            )
        )
    for reason in request.decision_reasons:
        print(f"decision: {reason}")


async def _show(
    args: argparse.Namespace, settings: Settings, metadata: tuple[tuple[str, str], ...]
) -> int:
    from healthbank.consent.v1 import consent_pb2

    channel, stub = _consent(settings)
    async with channel:
        request = await stub.GetResearchRequest(
            consent_pb2.GetResearchRequestRequest(name=args.name), metadata=metadata
        )
    _print_request(request)
    return 0


async def _vote(
    args: argparse.Namespace, settings: Settings, metadata: tuple[tuple[str, str], ...]
) -> int:
    from healthbank.consent.v1 import consent_pb2

    channel, stub = _consent(settings)
    async with channel:
        request = await stub.CastCommitteeVote(
            consent_pb2.CastCommitteeVoteRequest(
                name=args.name,
                choice=_CHOICES[args.choice],  # type: ignore[arg-type]
                comment=args.comment,
            ),
            metadata=metadata,
        )
    _print_request(request)
    return 0


async def _submit(
    args: argparse.Namespace, settings: Settings, metadata: tuple[tuple[str, str], ...]
) -> int:
    from healthbank.consent.v1 import consent_pb2
    from healthbank.core.ids import new_ulid

    asked = consent_pb2.ResearchRequest(
        purpose=args.purpose,
        protocol=args.protocol,
        ethics_approval_reference=args.ethics,
        cohort=consent_pb2.CohortDefinition(code_system=args.code_system, codes=_split(args.codes)),
        fields=_split(args.fields),
        groupings=_split(args.groupings),
        output_kind=_OUTPUTS[args.output],  # type: ignore[arg-type]
        period_start=_day(args.period_start),
        period_end=_day(args.period_end),
        access_until=_day(args.access_until),
        epsilon_budget=args.epsilon,
    )
    channel, stub = _consent(settings)
    async with channel:
        request = await stub.SubmitResearchRequest(
            consent_pb2.SubmitResearchRequestRequest(
                research_request=asked, request_id=args.request_id or new_ulid()
            ),
            metadata=metadata,
        )
    _print_request(request)
    return 0


async def _status(
    args: argparse.Namespace, settings: Settings, metadata: tuple[tuple[str, str], ...]
) -> int:
    from healthbank.consent.v1 import consent_pb2

    channel, stub = _consent(settings)
    async with channel:
        if args.name.startswith("researchGrants/"):
            grant = await stub.GetResearchGrant(
                consent_pb2.GetResearchGrantRequest(name=args.name), metadata=metadata
            )
            print(
                table(
                    ("grant", "output", "fields", "groupings", "epsilon", "spent", "expires"),
                    [
                        (
                            grant.name,
                            {1: "aggregates", 2: "synthetic"}.get(grant.output_kind, "?"),
                            ",".join(grant.fields),
                            ",".join(grant.groupings) or "-",
                            f"{grant.epsilon_budget:g}",
                            f"{grant.epsilon_spent:g}",
                            _when(grant.expire_time),
                        )
                    ],
                )
            )
            return 0
        request = await stub.GetResearchRequest(
            consent_pb2.GetResearchRequestRequest(name=args.name), metadata=metadata
        )
    _print_request(request)
    return 0


async def _aggregate(
    args: argparse.Namespace, settings: Settings, metadata: tuple[tuple[str, str], ...]
) -> int:
    from healthbank.ai_alert.v1 import ai_alert_pb2, ai_alert_pb2_grpc
    from healthbank.core.ids import new_ulid
    from healthbank.rpc.clients import open_channel

    spec = ai_alert_pb2.AggregateSpec(
        kind=_KINDS[args.kind],  # type: ignore[arg-type]
        field=args.field,
        group_by=_split(args.group_by),
        quantiles=[float(level) for level in _split(args.quantiles)],
        bin_edges=[int(edge) for edge in _split(args.bins)],
    )
    async with open_channel(settings.ai_alert_addr) as channel:
        result = await ai_alert_pb2_grpc.AiAlertServiceStub(channel).RunAggregate(
            ai_alert_pb2.RunAggregateRequest(
                grant_name=args.grant, spec=spec, epsilon=args.epsilon, query_id=new_ulid()
            ),
            metadata=metadata,
        )
    headers = [*spec.group_by] + (["bin"] if args.kind == "histogram" else [])
    if args.kind == "quantiles":
        headers += [f"q{level:g}" for level in spec.quantiles]
    else:
        headers.append(args.kind)
    rows = []
    for cell in result.cells:
        row: list[object] = list(cell.group_values)
        if args.kind == "histogram":
            row.append(cell.bin)
        if cell.suppressed:
            row += ["suppressed"] * (len(headers) - len(row))
        elif args.kind == "quantiles":
            row += [f"{value:g}" for value in cell.quantile_values]
        else:
            row.append(f"{cell.value:.1f}")
        rows.append(row)
    print(table(headers, rows))
    print(
        f"epsilon spent {result.epsilon:g}, left {result.epsilon_remaining:g}; cells under "
        f"{result.min_cell_size} persons suppressed; {result.mechanism}"
    )
    return 0


async def _synthesize(
    args: argparse.Namespace, settings: Settings, metadata: tuple[tuple[str, str], ...]
) -> int:
    from healthbank.ai_alert.v1 import ai_alert_pb2, ai_alert_pb2_grpc
    from healthbank.rpc.clients import open_channel

    fmt = (
        ai_alert_pb2.SYNTHETIC_FORMAT_PARQUET
        if args.format == "parquet"
        else ai_alert_pb2.SYNTHETIC_FORMAT_CSV
    )
    async with open_channel(settings.ai_alert_addr) as channel:
        cohort = await ai_alert_pb2_grpc.AiAlertServiceStub(channel).Synthesize(
            ai_alert_pb2.SynthesizeRequest(
                grant_name=args.grant, row_count=args.rows, format=fmt, seed=args.seed
            ),
            metadata=metadata,
        )
    await asyncio.to_thread(Path(args.out).write_bytes, cohort.content)
    print(f"{cohort.row_count} synthetic rows ({', '.join(cohort.columns)}) -> {args.out}")
    utility, privacy = cohort.utility, cohort.privacy
    print()
    print(
        table(
            ("field", "real mean", "synthetic mean", "real sd", "synthetic sd", "KS"),
            [
                (
                    m.field,
                    f"{m.real_mean:.2f}",
                    f"{m.synthetic_mean:.2f}",
                    f"{m.real_sd:.2f}",
                    f"{m.synthetic_sd:.2f}",
                    f"{m.ks_statistic:.3f}",
                )
                for m in utility.marginals
            ],
        )
    )
    print(
        f"max correlation difference {utility.max_correlation_difference:.3f}; "
        f"{utility.tstr_target} above median: train-on-synthetic {utility.tstr_accuracy:.3f}, "
        f"train-on-real {utility.trtr_accuracy:.3f}"
    )
    print()
    print(
        table(
            ("privacy check", "value", "limit"),
            [
                (
                    "closest distance to a real row",
                    f"{privacy.min_distance_to_real:.4f}",
                    f">= {privacy.distance_threshold:g}",
                ),
                ("median distance", f"{privacy.median_distance_to_real:.4f}", "-"),
                ("rows equal to a real row", privacy.exact_copies, "0"),
                (
                    "membership-inference AUC (p-value)",
                    f"{privacy.membership_inference_auc:.3f} "
                    f"({privacy.membership_inference_p_value:.2g})",
                    "-",
                ),
                ("passed", "yes" if privacy.passed else "no", "yes"),
            ],
        )
    )
    return 0
