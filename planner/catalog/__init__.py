"""Model specs as cited data, and the architecture they describe."""

from planner.catalog.arch import Architecture, Block, Linear
from planner.catalog.registry import CatalogEntry, ModelSpec, catalog, resolve_model, suggest

__all__ = ["Architecture", "Block", "Linear", "CatalogEntry", "ModelSpec", "catalog", "resolve_model", "suggest"]
