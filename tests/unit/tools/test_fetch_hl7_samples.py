"""tools/fetch_hl7_samples.py's extraction, on inputs shaped like its sources (no network)."""

from __future__ import annotations

from repo_paths import REPO

from healthbank.dev.scripts import load_script

TOOL = load_script(REPO / "tools" / "fetch_hl7_samples.py", "healthbank_tools_fetch_hl7_samples")


def test_messages_are_read_from_literals_and_cr_joins_without_running_code() -> None:
    source = """
import os
os.remove("never-run")
joined = "\\r".join(["MSH|^~\\\\&|A|B|C|D|2020||ADT^A01|1|P|2.5", "PID|||7"])
implicit = ("MSH|^~\\\\&|A|B|C|D|2020||ORU^R01|2|P|2.5\\r"
            "PID|||8\\r")
not_a_message = "MSH|^~\\\\&|only a header"
"""
    found = list(TOOL.messages_in_python(source))
    assert [TOOL.message_type(message) for message in found] == ["ADT", "ORU"]


def test_batches_split_into_messages_without_batch_segments() -> None:
    batch = "BHS|^~\\&|x\nMSH|^~\\&|a||||||ADT^A04|1\nPID|1\nMSH|^~\\&|a||||||ADT^A08|2\nBTS|2\n"
    assert TOOL.split_batch(batch) == [
        "MSH|^~\\&|a||||||ADT^A04|1\rPID|1\r",
        "MSH|^~\\&|a||||||ADT^A08|2\r",
    ]


def test_message_type_follows_the_declared_delimiters() -> None:
    assert TOOL.message_type("MSH#@$!%#a#b#c#d#2020##VXU@V04#1") == "VXU"
    assert TOOL.message_type("PID|1") == ""
