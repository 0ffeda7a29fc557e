"""Model specs as cited data, and the architecture they describe."""

from planner.catalog.arch import Architecture, Block, Linear
from planner.catalog.registry import CatalogEntry, ModelSpec, adapter_base, catalog, resolve_model, suggest

__all__ = ["Architecture", "Block", "Linear", "CatalogEntry", "ModelSpec", "adapter_base", "catalog", "resolve_model",
           "suggest"]
