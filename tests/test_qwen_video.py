"""Video on a tiny Qwen2.5-VL: inputs equal the stock processor's, temporal slices get their own spans,
M-RoPE time spacing comes from the sampled frames, and stage 2 ranks video tokens in padded batches
exactly as one by one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from PIL import Image
from tiny_qwen import save_tiny_qwen

from duet_cli.dynamic_inputs import seconds_per_slice
from duet_cli.engine.session import apply_profile
from duet_cli.errors import UnsupportedSetupError
from duet_cli.runtime import LoadedModel, Prompt, build_inputs, load_model, run
from duet_cli.video import Video

VIDEO_ID, IMAGE_ID = 152, 151


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    folder = save_tiny_qwen(str(tmp_path_factory.mktemp("tiny-qwen")))
    return load_model(folder, dtype="float32", device="cpu")


def frame(w: int, h: int, seed: int) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 255, (h, w, 3), generator=g, dtype=torch.uint8).numpy())


def clip(n: int, w: int, h: int, seed: int, fps: float = 8.0, every: int = 3) -> Video:
    frames = [frame(w, h, seed * 100 + i) for i in range(n)]
    return Video(f"clip{seed}.mp4", frames, [i * every for i in range(n)], n * every, fps, size=(w, h))


# 4 frames of 112 x 56 px: 2 temporal slices of 8 x 4 patches -> 2 x 8 merged tokens;
# 6 frames of 84 x 84 px: 3 slices of 6 x 6 patches -> 3 x 9 merged tokens
PROMPTS = [
    Prompt("what color is the circle ?", [], [clip(4, 112, 56, seed=1)]),
    Prompt("how many shapes are there ?", [frame(56, 56, 7)], [clip(6, 84, 84, seed=2)]),
]


def test_seconds_per_slice_from_the_sampled_frames() -> None:
    # frames 0, 3, 6, 9 of an 8 fps file: 3/8 s apart; a slice is 2 frames -> 0.75 s
    assert seconds_per_slice(clip(4, 56, 56, seed=0), 2) == pytest.approx(0.75)
    unknown = Video("x.mp4", [frame(56, 56, 0)] * 2, [0, 1], 2, None)
    assert seconds_per_slice(unknown, 2) == pytest.approx(1.0)  # the processors' default 2 frames/s


def test_video_inputs_equal_the_stock_processor(loaded: LoadedModel) -> None:
    video = PROMPTS[0].videos[0]
    with apply_profile(loaded.model, "baseline") as session:
        ours = build_inputs(loaded, session, PROMPTS[:1])
        assert session.video_slices == [(2, 8)]
    text, _ = loaded.adapter.build_prompt_counts(loaded.template, PROMPTS[0].question, [], [1])  # type: ignore[attr-defined]
    stock = loaded.processor(text=[text], videos=[video.frames], return_tensors="pt")
    assert torch.equal(ours["input_ids"], stock["input_ids"])  # one pad expanded to 16 by the processor
    assert torch.equal(ours["video_grid_thw"], stock["video_grid_thw"])
    torch.testing.assert_close(ours["pixel_values_videos"], stock["pixel_values_videos"])
    assert torch.equal(ours["mm_token_type_ids"], 2 * (ours["input_ids"] == VIDEO_ID).int())
    assert ours["second_per_grid_ts"].tolist() == pytest.approx([0.75])


def test_image_and_video_prompt_spans_and_token_types(loaded: LoadedModel) -> None:
    with apply_profile(loaded.model, "baseline") as session:
        inputs = build_inputs(loaded, session, PROMPTS)
        result = run(loaded, session, PROMPTS, max_new_tokens=2)
    ids, types = inputs["input_ids"], inputs["mm_token_type_ids"]
    assert (ids == VIDEO_ID).sum(dim=1).tolist() == [16, 27]
    assert (ids == IMAGE_ID).sum(dim=1).tolist() == [0, 4]
    assert torch.equal(types, (ids == IMAGE_ID).int() + 2 * (ids == VIDEO_ID).int())
    second = result.trace.samples[1]
    assert second.unreduced_visual_tokens == second.visual_tokens_in == 4 + 27
    spans = [(s.kind, s.index, s.start, s.stop, s.frame, s.source_frame) for s in second.spans]
    # the image, then three slices of 9 tokens; slice k starts at sampled frame 2k (file frame 6k)
    assert spans == [
        ("image", 0, 0, 4, None, None),
        ("frame", 0, 4, 13, 0, 0),
        ("frame", 0, 13, 22, 1, 6),
        ("frame", 0, 22, 31, 2, 12),
    ]


def test_stock_positions_space_slices_by_their_seconds(loaded: LoadedModel) -> None:
    """The model's own M-RoPE for video: slice k's temporal position is start + k * 0.75 s * tokens/s."""
    with apply_profile(loaded.model, "baseline") as session:
        inputs = build_inputs(loaded, session, PROMPTS[:1])
    pos, _ = loaded.model.model.get_rope_index(
        inputs["input_ids"],
        inputs["mm_token_type_ids"],
        video_grid_thw=inputs["video_grid_thw"],
        second_per_grid_ts=inputs["second_per_grid_ts"],
        attention_mask=inputs["attention_mask"],
    )
    video = inputs["input_ids"][0] == VIDEO_ID
    temporal = pos[0, 0, video].tolist()
    start = temporal[0]
    per_second = loaded.model.config.vision_config.tokens_per_second
    assert temporal == [start] * 8 + [start + int(0.75 * per_second)] * 8


@pytest.mark.parametrize("queries", ["last", "after_image"])
def test_stage2_on_video_batched_equals_one_by_one(loaded: LoadedModel, queries: str) -> None:
    from tiny_qwen import profile

    prof = profile("v", llm={"at_depth": [0.5, 0.75], "keep_ratios": [0.5, 0.25], "queries": queries})
    with apply_profile(loaded.model, prof) as session:
        batch = run(loaded, session, PROMPTS, max_new_tokens=4)
        singles = [run(loaded, session, [p], max_new_tokens=4) for p in PROMPTS]
    assert batch.answers == [s.answers[0] for s in singles]
    for got, single in zip(batch.trace.samples, singles):
        want = single.trace.samples[0]
        assert [d.kept for d in got.drops] == [d.kept for d in want.drops]
    # N0 = 16 and 31: keep floor(N0/2), floor(N0/4)
    assert [[len(d.kept) for d in s.drops] for s in batch.trace.samples] == [[8, 4], [15, 7]]


def test_keep_everything_llm_stage_on_video_is_the_stock_model(loaded: LoadedModel) -> None:
    from tiny_qwen import profile

    keep_all = profile("k", llm={"at_depth": [0.5], "keep_ratios": [1.0], "queries": "all"})
    with apply_profile(loaded.model, "baseline") as session:
        inputs = build_inputs(loaded, session, PROMPTS)
    with torch.no_grad():
        stock = loaded.model(**inputs).logits[:, -1]
        with apply_profile(loaded.model, keep_all):
            ours = loaded.model(**inputs).logits[:, -1]
    torch.testing.assert_close(ours, stock, rtol=1e-5, atol=1e-5)


def test_vision_stage_on_video_is_refused_in_one_line(loaded: LoadedModel) -> None:
    with (
        apply_profile(loaded.model, "qwen-duet-640") as session,
        pytest.raises(UnsupportedSetupError, match=r"vision stage on Qwen2\.5-VL video"),
    ):
        build_inputs(loaded, session, PROMPTS[:1])
