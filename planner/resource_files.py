"""The data under the repository's ``resources/`` folder, wherever the project is installed.

pyproject.toml installs that folder as the package ``planner.resources``, so ``importlib.resources``
finds the same files in a checkout (editable install) and in a wheel; a path relative to a source
file would hold in the checkout only.
"""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

PACKAGE = "planner.resources"


def resource(*parts: str) -> Traversable:
    """A file or folder under ``resources/``: ``resource("gpus.json")``, ``resource("models")``."""
    return files(PACKAGE).joinpath(*parts)
