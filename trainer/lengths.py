"""``python -m trainer lengths``: the tokens per example of a data set, as a run tokenizes them.

The planner's time model needs them (planner/samples.py: without packing, a micro-batch is padded
to its longest example). They come from here so that what is planned is the one tokenization the
trainer runs (trainer/data.py: the chat template or fallback layout, the EOS, the rows skipped for
having nothing to learn), before any truncation: the plan cuts them at its own ``seq_len``.

Prints one JSON object on stdout, :class:`planner.samples.SampleLengths`' fields; a bad model or
data set is one ``error:`` line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from planner.errors import PlannerError
from planner.options import BOUNDS
from planner.samples import SampleLengths
from trainer.config import ConfigError, TrainConfig
from trainer.formats import DataError


def lengths_of(cfg: TrainConfig, tokenizer) -> SampleLengths:
    """The lengths of ``cfg.dataset``'s usable examples, tokenized as ``cfg`` trains them."""
    from trainer.data import usable_rows

    return SampleLengths.of([len(ids) for ids, _ in usable_rows(cfg, tokenizer)])


def main(model: str, data: str, data_format: str = "auto", assistant_only_loss: bool = True,
         trust_remote_code: bool = False) -> int:
    from trainer.loading import ModelError, load_tokenizer

    try:
        cfg = TrainConfig(model=model, dataset=data, data_format=data_format, assistant_only_loss=assistant_only_loss,
                          max_seq_len=int(BOUNDS["seq_len"].high), trust_remote_code=trust_remote_code)
        lengths = lengths_of(cfg, load_tokenizer(cfg))
    except (ConfigError, ModelError, DataError, PlannerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(lengths)))
    return 0
