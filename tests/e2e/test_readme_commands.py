"""README's first command works from a fresh clone with the system's python3 first on PATH.

The copy holds the tracked files as they are in the working tree; PATH is the system's
alone (/usr/bin/python3 on Debian is "externally managed", PEP 668), so the command must
make its own virtual environment. The HEALTHBANK_*_ADDR variables point at free ports, so
the demo starts (and removes) its own stack whatever else runs on this machine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from repo_paths import REPO

from healthbank.core.config import DEFAULT_PORTS
from healthbank.dev.devstack import address_env_name, free_port


def first_readme_command() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## The two commands", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match is not None
    return match.group(1).strip()


def fresh_clone(target: Path) -> Path:
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, (entry.decode() for entry in tracked)):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def test_the_first_command_works_from_a_fresh_clone_with_system_python(tmp_path: Path) -> None:
    command = first_readme_command()
    assert command.startswith("python3 -m venv .venv")
    clone = fresh_clone(tmp_path / "clone")
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("HEALTHBANK_", "VIRTUAL_ENV", "PYTHON"))
    }
    env |= {"PATH": "/usr/bin:/bin", "TMPDIR": str(temp)}
    env |= {address_env_name(name): f"127.0.0.1:{free_port()}" for name in DEFAULT_PORTS}

    result = subprocess.run(
        ["bash", "-c", command],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "demo PASSED" in result.stdout
    assert (clone / ".venv" / "bin" / "healthbank").exists()
    assert not list(temp.glob("healthbank-demo-*")), "the demo left its stack folder behind"
