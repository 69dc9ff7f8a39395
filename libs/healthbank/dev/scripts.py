"""The repository's stand-alone scripts (tools/...), imported by path: they are not a package."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_script(path: Path, name: str) -> ModuleType:
    """The repository script at ``path``, imported as module ``name``.

    The module is registered in ``sys.modules`` before it runs: its dataclasses look their
    module up there. Each call runs the script again (and replaces what ``name`` held).
    """
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} cannot be imported as a module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
