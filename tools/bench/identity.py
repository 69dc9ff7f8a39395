"""How well the master patient index recognises one person, measured beside Splink.

    python tools/bench/identity.py [--persons 5000] [--seed 7] [--engines embedded|real]
                                   [--resolves 2000] [--warmup 1.0] [--json]

Generates a seeded population (tools/bench/identity_population.py: duplicates across
hospitals with the errors registration desks make, households sharing phones and addresses,
twins, newborns) with its ground truth, then:

1. the identity service's matcher (services/identity/matching.py): m / u weights learnt by
   EM on this data, candidates from the blocking rules, each candidate pair scored; a pair at
   or above the link threshold (and not held apart by a rule: possible twins or siblings,
   conflicting records) is an automatic link, one at or above the review threshold goes to
   the review queue; a pair whose later registration is a newborn's is neither, as in the
   service (a newborn is a new person);
2. Splink 4 on DuckDB over the same normalized records, with the same blocking rules, the
   same comparison levels (in SQL), u by random sampling, m by EM in the same two training
   sessions, and the same link threshold.

3. the identity service itself (its own process, in a stack of the services started as the
   speed benchmark does on ``--engines``: SQLite, or the real Cassandra and OpenBao in a
   scratch keyspace dropped afterwards), called over gRPC as
   ingest: ``new_resolves_per_s`` for the first resolve of registrations (unknown MRNs
   without a national ID, their demographics matched: linked, reviewed or created),
   ``known_resolves_per_s`` for the same (hospital, MRN) again; half of ``--resolves``
   through ResolveBatch (100 per call, 4 calls in flight: those two figures), the other
   half one Resolve per call with 16 in flight (``*_single_resolves_per_s``), beside the
   baseline: as many bare grpc.health Checks of the same service over the same channel
   at the same concurrency, first (``baseline_check_rps``, ``baseline_check_p99_ms``;
   ``check_cpu_ms`` by process, as ``*_resolve_cpu_ms`` for a batched resolve). The persons
   it gave those registrations are scored too (``service_precision`` / ``service_recall``,
   over the true pairs among them): online, in arrival order, with the weights it starts
   with (services/identity/match_weights.py) and its own rules (a newborn is not matched;
   a pair for review is two persons until an officer decides).

Precision, recall and F1 are over pairs of registrations (recall counts every true pair,
also those no blocking rule found). ``matcher_known_decisions_per_s`` /
``matcher_new_decisions_per_s`` are the matcher alone in memory. Figures are printed, never
asserted.

The service's rates are those of a warm node: first ``--warmup`` times ``--resolves``
registrations of another seed's population go through the same calls in a stack of their
own (:func:`warm_up`); their rates are printed apart (JSON: ``warmup``), not counted. On the
real engines, passes of further registrations follow while the node's JIT compiler took more
than a tenth of a core in the pass before (tools/bench/node_jit.py), four passes at most;
``node_jit_cores`` gives what it took in the warm-up's last pass and in the measured one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Sequence
from datetime import date
from itertools import combinations
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

import process_cpu
from identity_population import PopulationGenerator, Registration, true_pairs
from node_jit import CompilerMeter, cassandra_pid
from run import SECRET, bench_stack, new_run_id, timed

from healthbank.rpc.clients import open_channel
from services.identity import matching
from services.identity.index import MatchPolicy

TODAY = date(2026, 12, 1)
THRESHOLDS = matching.MatchThresholds()


def normalized(registrations: Sequence[Registration]) -> list[matching.MatchFeatures]:
    """Each registration's comparison-ready features."""
    return [
        matching.features(
            family_name=r.family_name,
            given_name=r.given_name,
            birth_date=r.birth_date,
            sex=r.sex,
            phone=r.phone,
            address=r.address,
            national_id=r.national_id,
        )
        for r in registrations
    ]


def quality(links: set[tuple[int, int]], truth: set[tuple[int, int]]) -> dict[str, float]:
    """Pairwise precision, recall and F1 of ``links`` against ``truth``."""
    correct = len(links & truth)
    precision = correct / len(links) if links else 1.0
    recall = correct / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def run_matcher(
    records: list[matching.MatchFeatures], truth: set[tuple[int, int]]
) -> dict[str, float]:
    """The identity matcher's automatic links and review queue on ``records``."""
    weights = matching.estimate_weights(records)
    links, review = decided_pairs(records, weights)
    figures = quality(links, truth)
    figures["review_pairs"] = float(len(review))
    figures["review_true_pairs"] = float(len(review & truth))
    figures.update(online_rates(records, truth, weights))
    return figures


def decided_pairs(
    records: Sequence[matching.MatchFeatures], weights: matching.MatchWeights
) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """(linked, reviewed) candidate pairs of ``records``, in arrival order."""
    newborn_days = MatchPolicy().newborn_days
    links: set[tuple[int, int]] = set()
    review: set[tuple[int, int]] = set()
    for left, right in matching.candidate_pairs(records):
        # The service never matches a newborn's registration (it is a new person): records
        # are in arrival order, so ``right`` is the one arriving.
        if matching.is_newborn(records[right].birth_date, TODAY, newborn_days):
            continue
        outcome = matching.decide(
            matching.score(weights, records[left], records[right]), THRESHOLDS
        )
        if outcome is matching.MatchOutcome.LINK:
            links.add((left, right))
        elif outcome is matching.MatchOutcome.REVIEW:
            review.add((left, right))
    return links, review


def online_rates(
    records: list[matching.MatchFeatures],
    truth: set[tuple[int, int]],
    weights: matching.MatchWeights,
) -> dict[str, float]:
    """Decisions per second for registrations arriving one by one against an in-memory index."""
    duplicates = {right for _, right in truth}
    blocks: dict[tuple[matching.BlockingRule, str], list[int]] = {}
    known_seconds = new_seconds = 0.0
    known = new = 0
    for position, record in enumerate(records):
        started = time.perf_counter()
        keys = matching.blocking_keys(record)
        candidates = {other for key in keys for other in blocks.get(key, ())}
        for other in candidates:
            matching.decide(matching.score(weights, record, records[other]), THRESHOLDS)
        for key in keys:
            blocks.setdefault(key, []).append(position)
        elapsed = time.perf_counter() - started
        if position in duplicates:
            known_seconds += elapsed
            known += 1
        else:
            new_seconds += elapsed
            new += 1
    return {
        "matcher_known_decisions_per_s": known / known_seconds if known_seconds else 0.0,
        "matcher_new_decisions_per_s": new / new_seconds if new_seconds else 0.0,
    }


CONCURRENCY = 16
BATCH = 100  # registrations per ResolveBatch, as a bulk load sends them
WARMUP_SEED_OFFSET = 1000  # the warm-up's population is seed + this
# On the real engines the warm-up goes on, pass after pass of new registrations, while the
# node's JIT compiler took more than this of a core in the pass before (node_jit.py).
JIT_QUIET_CORES = 0.1
WARMUP_MAX_PASSES = 4
BATCHES_IN_FLIGHT = 4


async def retried(method: Any, request: Any, auth: Any, attempts: int = 5) -> Any:
    """Call ``method``, again on UNAVAILABLE (resolving is idempotent), as ingest would."""
    for attempt in range(attempts):
        try:
            return await method(request, metadata=auth, timeout=120)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.1 * (attempt + 1))
    return None


async def service_rates(
    registrations: Sequence[Registration], identity_address: str, resolves: int
) -> dict[str, Any]:
    """Resolves per second of the identity service at ``identity_address`` for new and then
    known registrations, and the quality of the persons it gave the first ``resolves``
    registrations (``service_precision`` / ``service_recall``: the pairs it put in one
    person against the true pairs among them)."""
    from healthbank.contracts.principal import Principal, PrincipalKind, encode_token
    from healthbank.identity.v1 import identity_pb2, identity_pb2_grpc

    token = encode_token(Principal(PrincipalKind.SERVICE, "ingest"), SECRET.encode())
    auth = (("authorization", f"Bearer {token}"),)
    requests = [
        identity_pb2.ResolveRequest(
            hospital_id=r.hospital_id,
            mrn=r.mrn,
            demographics=identity_pb2.Demographics(
                family_name=r.family_name,
                given_name=r.given_name,
                birth_date=r.birth_date,
                sex=r.sex,
                phone=r.phone,
                address=r.address,
            ),
        )
        for r in registrations[:resolves]
    ]
    channel = open_channel(identity_address)
    try:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)

        # The person each registration got, by its position: the first answer only (the
        # "known" round asks again and must get the same).
        persons: dict[int, str] = {}

        def call(position: int) -> Any:
            async def resolve() -> None:
                response = await retried(stub.Resolve, requests[position], auth)
                persons.setdefault(position, response.person_token)

            return resolve

        def batch(start: int) -> Any:
            message = identity_pb2.ResolveBatchRequest(requests=requests[start : start + BATCH])

            async def resolve() -> None:
                response = await retried(stub.ResolveBatch, message, auth)
                for offset, result in enumerate(response.results):
                    if result.HasField("resolution"):
                        persons.setdefault(start + offset, result.resolution.person_token)

            return resolve

        half = len(requests) // 2
        batch_starts = range(half, len(requests), BATCH)
        rates: dict[str, Any] = {}
        # The baseline: the cheapest call this service answers, over the same channel at the
        # same concurrency as the single resolves, as many of them, in the same run.
        health: Any = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest()
        checks = await timed([lambda: health.Check(check) for _ in range(half)], CONCURRENCY)
        rates["baseline_check_rps"] = checks.per_second
        rates["baseline_check_p99_ms"] = checks.percentile(0.99)
        rates["check_cpu_ms"] = process_cpu.per_operation(checks.cpu_ms, half)
        for kind in ("new", "known"):
            single = await timed([call(position) for position in range(half)], CONCURRENCY)
            batched = await timed([batch(start) for start in batch_starts], BATCHES_IN_FLIGHT)
            rates[f"{kind}_single_resolves_per_s"] = half / single.seconds
            rates[f"{kind}_resolves_per_s"] = (len(requests) - half) / batched.seconds
            # Where a batched resolve's CPU went, by process (ms each): what bounds the rate.
            rates[f"{kind}_resolve_cpu_ms"] = process_cpu.per_operation(
                batched.cpu_ms, len(requests) - half
            )
        rates.update(service_quality(persons, true_pairs(list(registrations[: len(requests)]))))
    finally:
        await channel.close()
    return rates


def service_quality(persons: dict[int, str], truth: set[tuple[int, int]]) -> dict[str, float]:
    """Pairwise precision and recall of the persons the service gave (position → token)."""
    by_person: dict[str, list[int]] = {}
    for position, token in persons.items():
        by_person.setdefault(token, []).append(position)
    links = {pair for members in by_person.values() for pair in combinations(sorted(members), 2)}
    figures = quality(links, truth)
    return {"service_precision": figures["precision"], "service_recall": figures["recall"]}


def run_splink(
    records: list[matching.MatchFeatures], truth: set[tuple[int, int]]
) -> dict[str, float]:
    """Splink (DuckDB) on the same records, blocking rules and comparison levels."""
    import pandas as pd
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    logging.getLogger("splink").setLevel(logging.ERROR)
    rows = []
    for position, record in enumerate(records):
        names = sorted(part for part in (record.family, record.given) if part)
        rows.append(
            {
                "unique_id": position,
                "family": record.family,
                "given": record.given,
                "joined": (record.family + record.given) or None,
                "joined_swapped": (record.given + record.family) or None,
                "full_name_sorted": " ".join(names) or None,
                "initials_year": (
                    "".join(part[0] for part in names) + ":" + record.birth_date[:4]
                    if names and record.birth_date
                    else None
                ),
                "birth_date": record.birth_date or None,
                "sex": record.sex or None,
                "phone": record.phone or None,
                "address": record.address or None,
                "national_id": record.national_id or None,
            }
        )
    frame = pd.DataFrame(rows)

    def level(sql: str, label: str) -> cll.CustomLevel:
        return cll.CustomLevel(sql, label_for_charts=label)

    name = cl.CustomComparison(
        output_column_name="name",
        comparison_levels=[
            cll.NullLevel("joined"),
            level("family_l = family_r AND given_l = given_r", "exact"),
            level("family_l = given_r AND given_l = family_r", "swapped"),
            level(
                "least(levenshtein(joined_l, joined_r),"
                " levenshtein(joined_swapped_l, joined_r)) <= 1",
                "one_edit",
            ),
            level(
                "greatest(jaro_winkler_similarity(joined_l, joined_r), "
                f"jaro_winkler_similarity(joined_swapped_l, joined_r)) >= "
                f"{matching.NAME_FUZZY_SIMILARITY}",
                "fuzzy",
            ),
            level("family_l <> '' AND family_l = family_r", "family_only"),
            cll.ElseLevel(),
        ],
    )
    birth_date = cl.CustomComparison(
        output_column_name="birth_date",
        comparison_levels=[
            cll.NullLevel("birth_date"),
            level("birth_date_l = birth_date_r", "exact"),
            level(
                "substr(birth_date_l, 1, 4) = substr(birth_date_r, 1, 4) AND "
                "substr(birth_date_l, 5, 2) = substr(birth_date_r, 7, 2) AND "
                "substr(birth_date_l, 7, 2) = substr(birth_date_r, 5, 2)",
                "day_month_swapped",
            ),
            level("damerau_levenshtein(birth_date_l, birth_date_r) <= 1", "one_edit"),
            level("substr(birth_date_l, 1, 4) = substr(birth_date_r, 1, 4)", "same_year"),
            cll.ElseLevel(),
        ],
    )
    address_close = (
        "(address_l = address_r OR jaro_winkler_similarity(address_l, address_r) >= "
        f"{matching.ADDRESS_FUZZY_SIMILARITY})"
    )
    contact = cl.CustomComparison(
        output_column_name="contact",
        comparison_levels=[
            level(
                "(phone_l IS NULL OR phone_r IS NULL) AND (address_l IS NULL OR address_r IS NULL)",
                "missing",
            ).configure(is_null_level=True),
            level(f"phone_l = phone_r AND {address_close}", "phone_and_address"),
            level("phone_l = phone_r", "phone"),
            level("address_l = address_r", "address"),
            level(
                "jaro_winkler_similarity(address_l, address_r) >= "
                f"{matching.ADDRESS_FUZZY_SIMILARITY}",
                "address_fuzzy",
            ),
            cll.ElseLevel(),
        ],
    )
    settings = SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="unique_id",
        comparisons=[
            name,
            birth_date,
            cl.ExactMatch("sex"),
            contact,
            cl.ExactMatch("national_id"),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("initials_year"),
            block_on("full_name_sorted"),
            block_on("phone"),
            block_on("birth_date"),
            block_on("national_id"),
        ],
    )
    linker = Linker(frame, settings, db_api=DuckDBAPI())
    # Half the registrations carry the national ID: an ID rule finds about a quarter of pairs.
    linker.training.estimate_probability_two_random_records_match(
        [block_on("national_id")], recall=0.25
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=200_000, seed=0)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("birth_date"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("full_name_sorted"))
    predictions = linker.inference.predict(threshold_match_probability=THRESHOLDS.link)
    pairs = predictions.as_pandas_dataframe()
    links = {
        (min(left, right), max(left, right))
        for left, right in zip(pairs["unique_id_l"], pairs["unique_id_r"], strict=True)
    }
    return quality(links, truth)


def weights_module(weights: matching.MatchWeights, persons: int, seed: int) -> str:
    """services/identity/match_weights.py for ``weights`` (run ``ruff format`` after)."""

    def rows(table: tuple[tuple[float, ...], ...]) -> str:
        return (
            "(" + ", ".join("(" + ", ".join(f"{v:.6g}" for v in row) + ")" for row in table) + ")"
        )

    return (
        '"""Match weights the identity service starts with (ADR 25).\n\n'
        "Estimated by EM on the generated population of tools/bench/identity.py\n"
        f"({persons} persons, seed {seed}): ``python tools/bench/identity.py --persons {persons}\n"
        f"--seed {seed} --write-weights services/identity/match_weights.py``.\n"
        '"""\n\nfrom services.identity.matching import MatchWeights\n\n'
        f"DEFAULT_WEIGHTS = MatchWeights(\n    m={rows(weights.m)},\n"
        f"    u={rows(weights.u)},\n    prior={weights.prior:.6g},\n)\n"
    )


def warm_up(engines: str, persons: int, seed: int, resolves: int) -> dict[str, Any]:
    """The service rates of ``resolves`` registrations of another seed's population, in a
    stack (and keyspaces) of their own, before the measured one: the node is then warm, as
    one serving a city is (run.py's docstring has what a cold one costs), while the measured
    registrations meet no one else's. On the real engines, more passes of that population's
    next registrations follow while the node's JIT compiler is still busy (at most
    :data:`WARMUP_MAX_PASSES`; ``passes`` and the last pass's ``node_jit_cores`` say how it
    ended). Empty when ``resolves`` is 0."""
    if resolves <= 0:
        return {}
    others = PopulationGenerator(seed + WARMUP_SEED_OFFSET, TODAY).population(
        persons * WARMUP_MAX_PASSES
    )
    pid = cassandra_pid() if engines == "real" else None
    with bench_stack(engines, f"{new_run_id()}w") as (stack, _):
        for done in range(1, WARMUP_MAX_PASSES + 1):
            meter = CompilerMeter(pid).start() if pid is not None else None
            chunk = others[(done - 1) * resolves :]
            rates = asyncio.run(service_rates(chunk, stack.addresses["identity"], resolves))
            rates["passes"] = float(done)
            if meter is None:
                return rates
            rates["node_jit_cores"] = meter.cores()
            if rates["node_jit_cores"] <= JIT_QUIET_CORES:
                break
    return rates


def main() -> None:
    """Generate, match both ways, print the figures side by side (or one JSON object)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--persons", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--engines", choices=["embedded", "real"], default="embedded")
    parser.add_argument("--resolves", type=int, default=2000, help="registrations resolved")
    parser.add_argument("--write-weights", type=Path, help="write the learnt weights module")
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="first resolve this times --resolves registrations of another seed, in a stack of"
        " their own, not counted (0: none)",
    )
    args = parser.parse_args()
    registrations = PopulationGenerator(args.seed, TODAY).population(args.persons)
    records = normalized(registrations)
    if args.write_weights:
        module = weights_module(matching.estimate_weights(records), args.persons, args.seed)
        args.write_weights.write_text(module)
        return
    truth = true_pairs(registrations)
    ours = run_matcher(records, truth)
    theirs = run_splink(records, truth)
    warmup = warm_up(args.engines, args.persons, args.seed, round(args.resolves * args.warmup))
    pid = cassandra_pid() if args.engines == "real" else None
    with bench_stack(args.engines, new_run_id()) as (stack, _):
        meter = CompilerMeter(pid).start() if pid is not None else None
        served = asyncio.run(
            service_rates(registrations, stack.addresses["identity"], args.resolves)
        )
        if meter is not None:
            served["node_jit_cores"] = meter.cores()
    figures = {
        "registrations": float(len(records)),
        "true_pairs": float(len(truth)),
        **ours,
        **{f"splink_{name}": value for name, value in theirs.items()},
        **served,
    }
    if args.json:
        print(json.dumps({**figures, "warmup": warmup}))
        return
    print(f"{len(records)} registrations, {len(truth)} true pairs (seed {args.seed})")
    print(f"{'':12}{'precision':>10}{'recall':>10}{'f1':>10}")
    for label, prefix in (("healthbank", ""), ("splink", "splink_")):
        print(
            f"{label:12}{figures[prefix + 'precision']:>10.4f}"
            f"{figures[prefix + 'recall']:>10.4f}{figures[prefix + 'f1']:>10.4f}"
        )
    print(
        f"review queue: {ours['review_pairs']:.0f} pairs "
        f"({ours['review_true_pairs']:.0f} of them true)"
    )
    print(
        f"matcher decisions/s: known {ours['matcher_known_decisions_per_s']:,.0f}, "
        f"new {ours['matcher_new_decisions_per_s']:,.0f}"
    )
    print(
        f"identity ResolveBatch/s ({args.engines}): "
        f"known {served['known_resolves_per_s']:,.0f}, new {served['new_resolves_per_s']:,.0f}"
    )
    print(
        f"identity Resolve/s, one per call: known {served['known_single_resolves_per_s']:,.0f},"
        f" new {served['new_single_resolves_per_s']:,.0f}; beside them a bare health Check"
        f" on the same service: {served['baseline_check_rps']:,.0f}/s,"
        f" p99 {served['baseline_check_p99_ms']:.1f} ms"
    )
    for label, key in (
        ("batched new resolve", "new_resolve_cpu_ms"),
        ("batched known resolve", "known_resolve_cpu_ms"),
        ("health Check", "check_cpu_ms"),
    ):
        spent = served[key]
        print(
            f"  CPU ms a {label}: "
            + ", ".join(f"{group} {ms:.3f}" for group, ms in sorted(spent.items()) if ms >= 0.005)
        )
    if "node_jit_cores" in served:
        print(f"  the node's JIT compiler meanwhile: {served['node_jit_cores']:.2f} of a core")
    if warmup:
        jit = (
            f", its JIT compiler {warmup['node_jit_cores']:.2f} of a core in the last"
            if "node_jit_cores" in warmup
            else ""
        )
        print(
            f"  warm-up before (seed {args.seed + WARMUP_SEED_OFFSET}, a stack of its own, not"
            f" counted, {warmup['passes']:.0f} pass(es){jit}): ResolveBatch/s new"
            f" {warmup['new_resolves_per_s']:,.0f},"
            f" one per call new {warmup['new_single_resolves_per_s']:,.0f}"
        )
    print(
        f"identity service's persons for the first {args.resolves} registrations (online, its"
        f" weights file): precision {served['service_precision']:.4f},"
        f" recall {served['service_recall']:.4f}"
    )


if __name__ == "__main__":
    main()
