"""The runtime on a tiny Qwen2.5-VL: processor-sized images, per-image placeholder blocks with the reduced
counts, mm_token_type_ids, --min/--max-pixels, and the trace's per-image numbers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from tiny_qwen import IMAGE_ID, VISION_END_ID, VISION_START_ID, VOCAB, build_tiny_qwen, profile
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import PreTrainedTokenizerFast, Qwen2VLImageProcessor

from duet_cli.engine.session import apply_profile
from duet_cli.errors import InputError
from duet_cli.families.qwen2_5_vl import Qwen25VLAdapter
from duet_cli.inputs.chat_template import ChatTemplate
from duet_cli.runtime import LoadedModel, Prompt, build_inputs, run

TEMPLATE = "<|im_start|>user\n<image>{question}<|im_end|>\n<|im_start|>assistant\n"
SPECIAL = {
    "<|vision_start|>": VISION_START_ID,
    "<|image_pad|>": IMAGE_ID,
    "<|video_pad|>": 152,
    "<|vision_end|>": VISION_END_ID,
}


def tokenizer() -> PreTrainedTokenizerFast:
    words = ["what", "color", "is", "the", "circle", "?", "user", "assistant", "<|im_start|>", "<|im_end|>"]
    vocab = {"[PAD]": 0, "[UNK]": 3, **{w: 10 + i for i, w in enumerate(words)}, **SPECIAL}
    taken = set(vocab.values())  # every other id decodes to a word: generated text is never empty
    vocab |= {f"w{i}": i for i in range(VOCAB) if i not in taken}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tok.add_special_tokens([*SPECIAL, "<|im_start|>", "<|im_end|>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", padding_side="left"
    )


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    processor = SimpleNamespace(
        image_processor=Qwen2VLImageProcessor(
            patch_size=14, merge_size=2, temporal_patch_size=2, min_pixels=28 * 28, max_pixels=28 * 28 * 64
        )
    )
    return LoadedModel(
        name="tiny-qwen",
        model=build_tiny_qwen(),
        processor=processor,
        tokenizer=tokenizer(),
        adapter=Qwen25VLAdapter(),
        chat=ChatTemplate("test", text=TEMPLATE),
        dtype=torch.float32,
        device=torch.device("cpu"),
    )


def image(w: int, h: int, seed: int) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 255, (h, w, 3), generator=g, dtype=torch.uint8).numpy())


PROMPTS = [
    Prompt("what color is the circle ?", [image(168, 112, 0)]),  # 12 x 8 patches -> 24 merged tokens
    Prompt("what is the circle ?", [image(112, 112, 1), image(56, 112, 2)]),  # 16 + 8 merged tokens
]


def duet_like():  # type: ignore[no-untyped-def]
    return profile(
        "qwen-duet-like",
        vision={"dominant": 10, "contextual": 4, "contextual_mode": "pooled"},
        llm={
            "at_depth": [0.5, 0.75],
            "keep_ratios": [0.5, 0.25],
            "queries": "after_image",
            "positions": "keep",
        },
    )


def test_inputs_carry_per_image_blocks_and_token_types(loaded: LoadedModel) -> None:
    with apply_profile(loaded.model, duet_like()) as session:
        inputs = build_inputs(loaded, session, PROMPTS)
        assert session.image_tokens == [24, 16, 8]
    ids = inputs["input_ids"]
    assert torch.equal(inputs["mm_token_type_ids"], (ids == IMAGE_ID).int())
    assert inputs["image_grid_thw"].tolist() == [[1, 8, 12], [1, 8, 8], [1, 8, 4]]
    assert inputs["image_grid_thw"].dtype == torch.long and inputs["pixel_values"].dtype == torch.float32
    assert (ids == IMAGE_ID).sum(dim=1).tolist() == [14, 14 + 8]  # 10+4 each, and 7+1 for the 8-token image
    assert (ids == VISION_START_ID).sum(dim=1).tolist() == [1, 2]


def test_run_reports_each_images_own_numbers(loaded: LoadedModel) -> None:
    with apply_profile(loaded.model, duet_like()) as session:
        batch = run(loaded, session, PROMPTS, max_new_tokens=3)
        singles = [run(loaded, session, [p], max_new_tokens=3) for p in PROMPTS]
    assert batch.answers == [s.answers[0] for s in singles]
    first, second = batch.trace.samples
    assert (first.unreduced_visual_tokens, first.visual_tokens_in) == (24, 14)
    assert (second.unreduced_visual_tokens, second.visual_tokens_in) == (24, 22)
    assert [len(d.kept) for d in second.drops] == [11, 5]
    assert [img.grid for img in second.images] == [(4, 4), (4, 2)]


def test_max_pixels_bounds_the_tokens(loaded: LoadedModel) -> None:
    small = LoadedModel(**{**vars(loaded), "pixel_range": (None, 28 * 28 * 4)})
    with apply_profile(loaded.model, "baseline") as session:
        inputs = build_inputs(small, session, PROMPTS[:1])
    assert int((inputs["input_ids"] == IMAGE_ID).sum()) <= 4


def test_video_without_a_video_processor_is_refused_in_one_line(loaded: LoadedModel) -> None:
    from duet_cli.inputs.video import Video

    clip = Video("clip", [image(56, 56, 0)], [0], 1)
    refused = pytest.raises(InputError, match="has no video processor")
    with apply_profile(loaded.model, "baseline") as session, refused:
        build_inputs(loaded, session, [Prompt("what ?", [], [clip])])


def test_budget_relative_counts_follow_each_images_size(loaded: LoadedModel) -> None:
    vision = {"dominant_fraction": 0.5, "contextual_fraction": 0.25, "contextual_mode": "pooled"}
    rel = profile("rel", vision=vision)
    with apply_profile(loaded.model, rel) as session:
        batch = run(loaded, session, PROMPTS, max_new_tokens=2)
    first, second = batch.trace.samples
    # 24 merged tokens -> 12 + 6; the second prompt's 16 -> 8 + 4 and 8 -> 4 + 2
    assert [len(s.dominant) + len(s.contextual) for s in first.images] == [18]
    assert [(len(s.dominant), len(s.contextual)) for s in second.images] == [(8, 4), (4, 2)]
    assert (first.visual_tokens_in, second.visual_tokens_in) == (18, 18)
