"""A tiny Qwen2.5-VL built in code and prompt helpers.

Vision: 4 blocks of width 32 (2 heads), window attention over 2x2 merge units (window_size 56 px at
patch 14 and merge 2) with block 2 on full attention, 2x2 patch merger. Text: a GQA decoder (4 query
heads, 2 key/value heads, head_dim 16, M-RoPE sections [2, 3, 3]), depth 8.
An image is given by its patch grid (t, h, w), h and w even: it feeds h*w/4 merged tokens to the LLM.
"""

from __future__ import annotations

import copy

import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

VOCAB = 160
PAD_ID = 0
BOS_ID = 1
VISION_START_ID = 150
IMAGE_ID = 151
VIDEO_ID = 152
VISION_END_ID = 153
PATCH = 14
TEMPORAL = 2
PATCH_DIM = 3 * TEMPORAL * PATCH * PATCH  # 1176 values per patch, as the Qwen image processor flattens them
SUPPRESSED = [IMAGE_ID, VIDEO_ID, PAD_ID, VISION_START_ID, VISION_END_ID]


def tiny_qwen_config(depth: int = 8) -> Qwen2_5_VLConfig:
    vision = {
        "depth": 4,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "patch_size": PATCH,
        "temporal_patch_size": TEMPORAL,
        "spatial_merge_size": 2,
        "window_size": 56,  # 56 / 14 / 2 = 2 merge units per window side
        "fullatt_block_indexes": [2],
        "out_hidden_size": 64,
    }
    text = {
        "vocab_size": VOCAB,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": depth,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        "pad_token_id": PAD_ID,
        "bos_token_id": BOS_ID,
        "eos_token_id": 2,
    }
    return Qwen2_5_VLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=IMAGE_ID,
        video_token_id=VIDEO_ID,
        vision_start_token_id=VISION_START_ID,
        vision_end_token_id=VISION_END_ID,
        tie_word_embeddings=False,
    )


def build_tiny_qwen(seed: int = 0, depth: int = 8) -> Qwen2_5_VLForConditionalGeneration:
    config = copy.deepcopy(tiny_qwen_config(depth))
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    with torch.no_grad():  # sharper logits: greedy and beam decoding are not coin tosses
        model.lm_head.weight.mul_(8.0)
    model.generation_config.pad_token_id = PAD_ID
    model.generation_config.eos_token_id = None
    model.generation_config.suppress_tokens = SUPPRESSED
    return model


def merged_tokens(grid: tuple[int, int, int]) -> int:
    t, h, w = grid
    return t * h * w // 4


def make_prompt(before: list[int], grids: list[tuple[int, int, int]], after: list[int]) -> list[int]:
    """BOS, text, then each image as <vision_start> placeholders <vision_end>, then text."""
    row = [BOS_ID, *before]
    for grid in grids:
        row += [VISION_START_ID, *([IMAGE_ID] * merged_tokens(grid)), VISION_END_ID]
    return row + after


def left_pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask


def image_pixels(grid: tuple[int, int, int], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t, h, w = grid
    return torch.randn(t * h * w, PATCH_DIM, generator=g)


# three prompts of different lengths and image sizes (left padding needed); prompt 2 has two images
BEFORE = [[5, 6, 7, 8], [9], [10, 11, 12]]
AFTER = [[20, 21, 22, 23, 24], [25, 26], [27, 28, 29]]
GRIDS: list[list[tuple[int, int, int]]] = [[(1, 8, 12)], [(1, 12, 8)], [(1, 8, 8), (1, 4, 8)]]


def batch_inputs(
    which: list[int] | None = None, grids: list[list[tuple[int, int, int]]] | None = None
) -> dict:
    """Left-padded inputs for the prompts in `which` (default all three), with `mm_token_type_ids`."""
    which = which if which is not None else [0, 1, 2]
    grids = grids if grids is not None else GRIDS
    rows = [make_prompt(BEFORE[i], grids[i], AFTER[i]) for i in which]
    ids, mask = left_pad(rows)
    px = [image_pixels(g, seed=10 * i + j) for i in which for j, g in enumerate(grids[i])]
    thw = [g for i in which for g in grids[i]]
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "mm_token_type_ids": (ids == IMAGE_ID).int(),
        "pixel_values": torch.cat(px),
        "image_grid_thw": torch.tensor(thw, dtype=torch.long),
    }


def profile(name: str = "test", vision: dict | None = None, llm: dict | None = None):  # type: ignore[no-untyped-def]
    """A validated Profile built in code (same validation as a YAML file)."""
    from duet_cli.profiles import parse_profile

    data: dict = {"name": name}
    if vision is not None:
        data["vision"] = {"method": "visionzip", **vision}
    if llm is not None:
        data["llm"] = {"method": "pyramiddrop", **llm}
    return parse_profile(data, where=name, default_name=name)


# words of the questions the CLI tests ask (synth questions included); anything else is [UNK]
_WORDS = """what color is the circle square triangle star ? . , a an of to in on left right above below
how many shapes are there letter digit written yes no which red green blue yellow purple orange answer
with one two three four five six word image picture describe user assistant system"""
WORDS = _WORDS.split()


def save_tiny_qwen(folder: str, depth: int = 8) -> str:
    """A tiny Qwen2.5-VL saved as a hub-style folder: weights, config, and a stock `Qwen2_5_VLProcessor`
    (Qwen2-VL image and video processors at 14 px patches with 2x2 merge, a word-level tokenizer that
    carries Qwen's special tokens at this model's ids), so every command can load it with `-m FOLDER`."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    special = {
        "<|vision_start|>": VISION_START_ID,
        "<|image_pad|>": IMAGE_ID,
        "<|video_pad|>": VIDEO_ID,
        "<|vision_end|>": VISION_END_ID,
        "<|im_start|>": 154,
        "<|im_end|>": 155,
    }
    vocab = {"[PAD]": PAD_ID, "<s>": BOS_ID, "</s>": 2, "[UNK]": 3}
    vocab |= {w: 10 + i for i, w in enumerate(dict.fromkeys(WORDS))} | special
    assert max(vocab.values()) < VOCAB
    taken = set(vocab.values())  # every other id decodes to a word too, so generated text is never empty
    vocab |= {f"w{i}": i for i in range(VOCAB) if i not in taken}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tok.add_special_tokens(list(special))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="</s>", padding_side="left"
    )
    sizes = {"min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 64}
    geometry = {"patch_size": PATCH, "merge_size": 2, "temporal_patch_size": TEMPORAL, **sizes}
    image_processor = Qwen2VLImageProcessor(**geometry)
    video_processor = Qwen2VLVideoProcessor(**geometry)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor
    )
    model = build_tiny_qwen(depth=depth)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
