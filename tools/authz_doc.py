"""Write docs/authorization.md from the authorization table (one command, reproducible).

python tools/authz_doc.py          # write docs/authorization.md
python tools/authz_doc.py --check  # exit 1 if what is checked in is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from healthbank.rpc.authz import authorization_markdown

DOC = Path(__file__).resolve().parent.parent / "docs" / "authorization.md"


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, compare) docs/authorization.md; the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the doc is stale")
    args = parser.parse_args(argv)
    wanted = authorization_markdown()
    if args.check:
        if not DOC.exists() or DOC.read_text() != wanted:
            print(f"{DOC.name} is stale: run python tools/authz_doc.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
