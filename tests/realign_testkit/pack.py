"""Import the pack the way ComfyUI does (a package with relative imports), under a fixed name.

ComfyUI loads the pack from its folder, whatever it is called. Tests load it as the package
``realign_pack``. The core is importable on its own as ``realign_diff``; an alias finder makes
``realign_pack.realign_diff.*`` the very same module objects, so values built with the core in a
test are the types the node modules check against.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[2]
PACK_NAME = "realign_pack"
CORE = "realign_diff"


class _CoreAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    prefix = f"{PACK_NAME}.{CORE}"

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.prefix or fullname.startswith(self.prefix + "."):
            return importlib.util.spec_from_loader(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return importlib.import_module(spec.name[len(PACK_NAME) + 1 :])

    def exec_module(self, module):
        pass  # already executed under its own name


def load_pack():
    """The pack's top-level package, imported as ``realign_pack``."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    if str(PACK_ROOT) not in sys.path:
        sys.path.insert(0, str(PACK_ROOT))  # for ``import realign_diff``; pyproject sets it too
    sys.meta_path.insert(0, _CoreAlias())
    spec = importlib.util.spec_from_file_location(
        PACK_NAME, PACK_ROOT / "__init__.py", submodule_search_locations=[str(PACK_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module
