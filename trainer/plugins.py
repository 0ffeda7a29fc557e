"""Extra transformers callbacks from outside the trainer, named by an environment variable.

``FINETUNE_TRAINER_PLUGIN=path/to/module.py:function`` (or ``package.module:function``) makes
every run call ``function(cfg, commands)`` and add the callbacks it returns ahead of the event
callback. The test suite uses it to fail or command a run at a chosen step
(``tests/trainer/trainer_test_hooks.py``); the app never sets it, and without it the trainer
imports nothing but its own modules.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from typing import Any

from trainer.config import ConfigError, TrainConfig

PLUGIN_ENV = "FINETUNE_TRAINER_PLUGIN"


def plugin_callbacks(cfg: TrainConfig, commands: Any) -> list[Any]:
    spec = os.environ.get(PLUGIN_ENV, "").strip()
    if not spec:
        return []
    where, _, function = spec.rpartition(":")
    try:
        if where.endswith(".py"):
            loader = importlib.util.spec_from_file_location(Path(where).stem, where)
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
        make = getattr(module, function)
    except (ImportError, OSError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{PLUGIN_ENV}={spec}: cannot load it ({exc}); unset it or fix the path") from None
    return list(make(cfg, commands))
