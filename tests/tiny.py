"""Tiny LLaVA models built from configs in code (real 336/14 patch geometry, 8 layers) and prompt helpers."""

from __future__ import annotations

import copy

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

VOCAB = 128
IMAGE_ID = 127
PAD_ID = 0
BOS_ID = 1
PATCHES = 576


def tiny_llava_config(depth: int = 8, kv_heads: int = 2) -> LlavaConfig:
    vision = CLIPVisionConfig(
        image_size=336,
        patch_size=14,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
    )
    text = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=depth,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        max_position_embeddings=2048,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=2,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=IMAGE_ID,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )


def build_tiny_llava(seed: int = 0, depth: int = 8, **overrides: object) -> LlavaForConditionalGeneration:
    config = copy.deepcopy(tiny_llava_config(depth))
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    # random init leaves logits nearly flat; sharpen them so greedy/beam decoding is not a coin toss
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    model.generation_config.pad_token_id = PAD_ID
    model.generation_config.eos_token_id = None
    model.generation_config.suppress_tokens = [IMAGE_ID, PAD_ID]
    return model


def make_prompt(text_before: list[int], n_image_tokens: int, text_after: list[int]) -> list[int]:
    return [BOS_ID, *text_before, *([IMAGE_ID] * n_image_tokens), *text_after]


def left_pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask


def pixels(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 336, 336, generator=g)


def profile(name: str = "test", vision: dict | None = None, llm: dict | None = None):  # type: ignore[no-untyped-def]
    """A validated Profile built in code (same validation as a YAML file)."""
    from duet_cli.profiles import parse_profile

    data: dict = {"name": name}
    if vision is not None:
        data["vision"] = {"method": "visionzip", **vision}
    if llm is not None:
        data["llm"] = {"method": "pyramiddrop", **llm}
    return parse_profile(data, where=name, default_name=name)


# text before / after the image for three prompts of different lengths (left padding needed)
BEFORE = [[5, 6, 7, 8], [9], [10, 11, 12, 13, 14, 15, 16]]
AFTER = [[20, 21, 22, 23, 24], [25, 26], [27, 28, 29]]


def batch_inputs(n_image_tokens: int, which: list[int] | None = None, seed: int = 0) -> dict:
    """Left-padded inputs for the prompts in `which` (default all three), one image each."""
    which = which if which is not None else [0, 1, 2]
    rows = [make_prompt(BEFORE[i], n_image_tokens, AFTER[i]) for i in which]
    ids, mask = left_pad(rows)
    all_px = pixels(3, seed)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": all_px[which]}
