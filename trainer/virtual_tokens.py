"""Generating with a prompt- or prefix-tuning adapter: the one place that works around peft's own
``generate`` for them.

Targets peft 0.21.2 with transformers 5.24, where ``PeftModel.generate`` gets both wrong, silently:

- prefix tuning: peft hands its trained keys and values to the model as ``past_key_values``, a
  name transformers 5 no longer reads in ``generate`` (its cache is ``cache``), so the answer is
  the base model's;
- prompt tuning: the first new token is right and later ones are not (measured against a greedy
  loop through the PeftModel's forward; peft's per-step input preparation for virtual tokens is
  the part that runs differently from that forward).

Both are run here as the training forward runs them, through the base model's own ``generate``:
prompt tuning's virtual token embeddings go in front of the prompt's embeddings
(``inputs_embeds``); prefix tuning's keys and values are the starting cache, with as many
placeholder ids in front of the prompt as there are virtual tokens, so positions and the attention
mask count them as training did. Both match a greedy loop through the PeftModel's forward, no cache
(tests/trainer/test_generate.py). When peft and transformers agree again, this module goes.
"""

from __future__ import annotations

from typing import Any


def virtual_kind(model: Any) -> str | None:
    """``prompt`` or ``prefix`` when the model's active adapter adds virtual tokens, else None
    (a plain model, LoRA and its kin: their ``generate`` is right as it is)."""
    from peft import PeftModel, PeftType

    if not isinstance(model, PeftModel):
        return None
    peft_type = model.active_peft_config.peft_type
    return {PeftType.PROMPT_TUNING: "prompt", PeftType.PREFIX_TUNING: "prefix"}.get(peft_type)


def generate(model: Any, input_ids: Any, pad_token_id: int, **kwargs: Any) -> Any:
    """``model.generate`` for a PeftModel whose active adapter is prompt or prefix tuning
    (:func:`virtual_kind`); ``kwargs`` are ``generate``'s (no attention mask: the prompt is one
    unpadded row per batch entry). Streamers see the prompt first, then each new token, as usual."""
    import torch

    kind = virtual_kind(model)
    if kind is None:
        raise ValueError("virtual_tokens.generate: the active adapter is neither prompt nor prefix tuning")
    base = model.get_base_model()
    batch = input_ids.shape[0]
    prompt = model.get_prompt(batch_size=batch)
    if kind == "prompt":
        embeds = model.word_embeddings(input_ids)
        embeds = torch.cat([prompt.to(embeds.dtype), embeds], dim=1)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        return base.generate(inputs_embeds=embeds, attention_mask=mask, pad_token_id=pad_token_id, **kwargs)
    # placeholders stand for the cached prefix: generate feeds only the ids past the cache's length
    placeholders = torch.full((batch, model.active_peft_config.num_virtual_tokens), pad_token_id,
                              dtype=input_ids.dtype, device=input_ids.device)
    ids = torch.cat([placeholders, input_ids], dim=1)
    return base.generate(input_ids=ids, attention_mask=torch.ones_like(ids), cache=prompt,
                         pad_token_id=pad_token_id, **kwargs)
