"""The front-door documents stay true to the tree: links resolve, the layout is complete."""

from __future__ import annotations

import re
import tomllib

from repo_paths import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_relative_links_resolve_inside_the_repository() -> None:
    broken = []
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto
            resolved = (doc.parent / target).resolve()
            if not resolved.is_relative_to(REPO) or not resolved.exists():
                broken.append(f"{doc.relative_to(REPO)}: {target}")
    assert broken == []


def test_readme_links_the_design_map() -> None:
    assert "](docs/DESIGN.md)" in (REPO / "README.md").read_text()


def test_layouts_name_every_library_package() -> None:
    packages = {
        path.name
        for path in (REPO / "libs" / "healthbank").iterdir()
        if (path / "__init__.py").exists() and not (path / "v1").exists()
    }
    assert {"core", "contracts", "ledger", "dev", "rpc", "storage", "records", "crypto"} <= packages
    for doc in (REPO / "README.md", REPO / "docs" / "DESIGN.md"):
        layout = doc.read_text().split("ayout", 1)[1]
        missing = [name for name in sorted(packages) if f"  {name}/" not in layout]
        assert missing == [], f"{doc.name} layout lacks {missing}"


def test_readme_states_the_supported_pythons_pyproject_allows() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11,<3.14"
    readme = (REPO / "README.md").read_text()
    assert "Needs Python 3.11, 3.12 or 3.13" in readme
    test_sh = (REPO / "tools" / "test.sh").read_text()
    assert "MAIN=${HEALTHBANK_MAIN_PYTHON:-3.11}" in test_sh
    assert "OTHERS=${HEALTHBANK_OTHER_PYTHONS-3.12 3.13}" in test_sh


def test_venvs_and_data_are_ignored() -> None:
    ignored = (REPO / ".gitignore").read_text().split()
    assert {".venv/", ".venvs/", ".healthbank-data/", ".engines/"} <= set(ignored)
