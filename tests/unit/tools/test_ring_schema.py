"""tools/engines/ring.py reads which nodes lag on the schema from nodetool's own output."""

from __future__ import annotations

from repo_paths import REPO

from healthbank.dev.scripts import load_script

RING = load_script(REPO / "tools" / "engines" / "ring.py", "healthbank_tools_ring")
CFG = RING.RingConfig.load(3)

# As Cassandra 5.0.8's `nodetool describecluster` prints it (trimmed after the versions).
HEADER = """Cluster Information:
\tName: healthbank-ring
\tSnitch: org.apache.cassandra.locator.GossipingPropertyFileSnitch
\tDynamicEndPointSnitch: disabled
\tPartitioner: org.apache.cassandra.dht.Murmur3Partitioner
\tSchema versions:
"""
FOOTER = """
Stats for all nodes:
\tLive: 3
"""


def described(*lines: str) -> str:
    return HEADER + "".join(f"\t\t{line}\n" for line in lines) + FOOTER


def test_one_version_on_every_node_leaves_none_behind() -> None:
    text = described("d03783d7-b468-3c1a-82f1-8e30b2edde8b: [127.0.0.1, 127.0.0.2, 127.0.0.3]")
    versions = RING.schema_versions(text)
    assert versions == {
        "d03783d7-b468-3c1a-82f1-8e30b2edde8b": ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    }
    assert RING.lagging_nodes(CFG, versions) == []


def test_the_node_on_an_old_version_is_behind() -> None:
    text = described(
        "39cbf09a-92f4-38a0-a76f-f62723e2e98d: [127.0.0.1, 127.0.0.3]",
        "06fef94b-eb3f-330e-98ac-e04d1bbd6dd2: [127.0.0.2]",
    )
    assert RING.lagging_nodes(CFG, RING.schema_versions(text)) == [2]


def test_an_unreachable_node_is_behind_and_a_tie_goes_to_node_1() -> None:
    text = described(
        "39cbf09a-92f4-38a0-a76f-f62723e2e98d: [127.0.0.2]",
        "06fef94b-eb3f-330e-98ac-e04d1bbd6dd2: [127.0.0.1]",
        "",
        "UNREACHABLE: [127.0.0.3]",
    )
    assert RING.lagging_nodes(CFG, RING.schema_versions(text)) == [2, 3]


def test_output_without_versions_leaves_every_node_behind() -> None:
    """nodetool failed (JMX not up yet): nothing agrees, nothing is taken as settled."""
    assert RING.lagging_nodes(CFG, RING.schema_versions("nodetool: Failed to connect")) == [
        1,
        2,
        3,
    ]
