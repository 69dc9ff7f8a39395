"""How the identity service's candidate search grows with the index.

    python tools/bench/identity_blocks.py [--persons 5000,50000,200000] [--seed 7]
                                          [--per-key N] [--json]

For each population size, the generated registrations (tools/bench/identity_population.py)
arrive one by one, as at the service. Each one's candidates are taken the way the service
takes them (services/identity/index.py, the stores' ``persons_matching``): under each of its
blocking keys (services/identity/matching.py), at most ``MatchPolicy.candidates_per_key``
persons (``--per-key`` sets another), the first in person-token order, which is the stores'
order. Then it is filed under
its keys: as its own person, or as the person it belongs to when that person was among its
candidates (the service links it there, given a match).

Printed per size:
- ``candidates_per_registration``: the persons a registration is compared with on average;
  the service reads, opens and scores each one;
- ``findable`` / ``findable_capped``: registrations whose person was filed earlier under one
  of their keys, then the same among the capped candidates; ``hidden_by_cap`` is the
  difference, true matches the service cannot see;
- each rule's mean and largest block (persons a key).

In memory: no service and no store. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from identity import TODAY, normalized
from identity_population import PopulationGenerator

from services.identity import matching
from services.identity.index import MatchPolicy


def candidate_search(persons: int, seed: int, per_key: int) -> dict[str, Any]:
    """The candidate-search figures for a population of ``persons`` (see the docstring)."""
    registrations = PopulationGenerator(seed, TODAY).population(persons)
    features = normalized(registrations)
    # A key's persons in token order, and whose each token is.
    blocks: dict[tuple[matching.BlockingRule, str], list[str]] = {}
    person_of_token: dict[str, int] = {}
    compared = findable = findable_capped = 0
    for registration, probe in zip(registrations, features, strict=True):
        keys = matching.blocking_keys(probe)
        # Every key's list gets this registration's token below, so none stays empty.
        filed = [blocks.setdefault(key, []) for key in keys]
        capped = {token for tokens in filed for token in tokens[:per_key]}
        compared += len(capped)
        person = registration.person_id
        findable += any(person_of_token[token] == person for tokens in filed for token in tokens)
        own = [token for token in capped if person_of_token[token] == person]
        findable_capped += bool(own)
        token = own[0] if own else _token(registration.hospital_id, registration.mrn)
        person_of_token[token] = person
        for tokens in filed:
            at = bisect.bisect_left(tokens, token)
            if at == len(tokens) or tokens[at] != token:
                tokens.insert(at, token)
    sizes: dict[str, list[int]] = {}
    for (rule, _), tokens in blocks.items():
        sizes.setdefault(rule.value, []).append(len(tokens))
    return {
        "persons": persons,
        "registrations": len(registrations),
        "candidates_per_registration": compared / len(registrations),
        "findable": findable,
        "findable_capped": findable_capped,
        "hidden_by_cap": findable - findable_capped,
        "blocks": {
            rule: {"mean": sum(counts) / len(counts), "largest": max(counts)}
            for rule, counts in sorted(sizes.items())
        },
    }


def _token(hospital_id: str, mrn: str) -> str:
    # Stands in for the service's keyed hash: only the order it gives matters here.
    return hashlib.sha256(f"{hospital_id}\x00{mrn}".encode()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--persons", default="5000,50000,200000", help="sizes, comma-separated")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--per-key",
        type=int,
        default=MatchPolicy().candidates_per_key,
        help="persons taken from each key (default: the service's)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    per_key = args.per_key
    sizes = [int(size) for size in args.persons.split(",")]
    figures = [candidate_search(size, args.seed, per_key) for size in sizes]
    if args.json:
        print(json.dumps({"candidates_per_key": per_key, "sizes": figures}))
        return
    print(f"candidates taken per key: {per_key}")
    for f in figures:
        hidden = 100 * f["hidden_by_cap"] / max(f["findable"], 1)
        print(
            f"{f['persons']:>9,} persons, {f['registrations']:,} registrations:"
            f" {f['candidates_per_registration']:.1f} candidates a registration;"
            f" {f['findable']:,} findable, {f['hidden_by_cap']:,} hidden by the cap"
            f" ({hidden:.2f} %)"
        )
        for rule, block in f["blocks"].items():
            print(f"    {rule}: mean {block['mean']:.1f}, largest {block['largest']}")


if __name__ == "__main__":
    main()
