"""Tiny Video-LLaVA models built in code (CLIP 224/14 for both towers: 256 patches + CLS; 8-layer Llama),
prompt helpers for video and image inputs, and short test videos written with PyAV."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from transformers import CLIPVisionConfig, LlamaConfig, VideoLlavaConfig, VideoLlavaForConditionalGeneration

VOCAB = 128
IMAGE_ID = 126
VIDEO_ID = 127
PAD_ID = 0
BOS_ID = 1
FRAME_TOKENS = 257  # CLS + 16 x 16 patches: Video-LLaVA keeps CLS on video frames
IMAGE_TOKENS = 256  # images drop CLS ("default" strategy)


def tiny_video_llava_config(depth: int = 8) -> VideoLlavaConfig:
    vision = CLIPVisionConfig(
        image_size=224,
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
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=2,
    )
    return VideoLlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=IMAGE_ID,
        video_token_index=VIDEO_ID,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
        image_seq_length=IMAGE_TOKENS,
        video_seq_length=8 * FRAME_TOKENS,
    )


def build_tiny_video_llava(
    seed: int = 0, depth: int = 8, **overrides: object
) -> VideoLlavaForConditionalGeneration:
    config = copy.deepcopy(tiny_video_llava_config(depth))
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = VideoLlavaForConditionalGeneration(config).eval()
    with torch.no_grad():  # sharper logits: greedy and beam decoding are not coin tosses
        model.lm_head.weight.mul_(8.0)
    model.generation_config.pad_token_id = PAD_ID
    model.generation_config.eos_token_id = None
    model.generation_config.suppress_tokens = [IMAGE_ID, VIDEO_ID, PAD_ID]
    return model


def left_pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask


# text before / after the clip for three prompts of different lengths (left padding needed)
BEFORE = [[5, 6, 7, 8], [9], [10, 11, 12, 13, 14, 15, 16]]
AFTER = [[20, 21, 22, 23, 24], [25, 26], [27, 28, 29]]


def video_pixels(n: int, frames: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, frames, 3, 224, 224, generator=g)


def video_inputs(per_frame: int, frames: int = 8, which: list[int] | None = None, seed: int = 0) -> dict:
    """Left-padded prompts in `which` (default all three), one clip of `frames` frames each."""
    which = which if which is not None else [0, 1, 2]
    rows = [[BOS_ID, *BEFORE[i], *([VIDEO_ID] * (per_frame * frames)), *AFTER[i]] for i in which]
    ids, mask = left_pad(rows)
    px = video_pixels(3, frames, seed)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values_videos": px[which]}


def image_inputs(per_image: int, which: list[int] | None = None, seed: int = 0) -> dict:
    """Left-padded prompts in `which`, one image each (through the image tower)."""
    which = which if which is not None else [0, 1, 2]
    rows = [[BOS_ID, *BEFORE[i], *([IMAGE_ID] * per_image), *AFTER[i]] for i in which]
    ids, mask = left_pad(rows)
    g = torch.Generator().manual_seed(seed)
    px = torch.randn(3, 3, 224, 224, generator=g)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": px[which]}


def profile(name: str = "test", vision: dict | None = None, llm: dict | None = None):  # type: ignore[no-untyped-def]
    from duet_cli.profiles import parse_profile

    data: dict = {"name": name}
    if vision is not None:
        data["vision"] = {"method": "visionzip", **vision}
    if llm is not None:
        data["llm"] = {"method": "pyramiddrop", **llm}
    return parse_profile(data, where=name, default_name=name)


# ---------------------------------------------------------------------------------------------------------
# video files


def frame_image(i: int, width: int = 64, height: int = 48) -> np.ndarray:
    """Frame i of the test clip: a bright bar moving right over a background that brightens."""
    img = np.zeros((height, width, 3), dtype=np.uint8)
    img[..., 1] = (i * 9) % 256
    x = (i * 3) % (width - 8)
    img[:, x : x + 8] = (255, 40, 40)
    return img


def write_video(path: Path, n_frames: int = 24, codec: str = "mpeg4", fps: int = 8) -> Path:
    """A short clip written with PyAV (moov atom first for mp4, so a cut file keeps its header)."""
    import av

    options = {"movflags": "faststart"} if path.suffix == ".mp4" else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuv420p"
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(frame_image(i), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_empty_stream(path: Path) -> Path:
    """A container with a video stream and no frames (a zero-length video)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuv420p"
        container.start_encoding()
    return path


def truncate(src: Path, dst: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def corrupt(src: Path, dst: Path, seed: int = 1) -> Path:
    """The same file with a run of random bytes over the middle of its frame data."""
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(seed)
    start, stop = len(data) // 3, 2 * len(data) // 3
    data[start:stop] = rng.integers(0, 256, stop - start, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


# the Video-LLaVA-7B-hf prompt format ("USER: <video>\n{question} ASSISTANT:") as a processor template
VIDEO_LLAVA_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] != 'system' %}{{ m['role'].upper() + ': ' }}{% endif %}"
    "{% for c in m['content'] if c['type'] == 'image' %}{{ '<image>\\n' }}{% endfor %}"
    "{% for c in m['content'] if c['type'] == 'video' %}{{ '<video>\\n' }}{% endfor %}"
    "{% for c in m['content'] if c['type'] == 'text' %}{{ c['text'] + ' ' }}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def save_tiny_video_llava(root: Path, depth: int = 8, chat_template: str = VIDEO_LLAVA_TEMPLATE) -> Path:
    """A loadable Video-LLaVA checkpoint folder with random weights: the tiny-llava tokenizer plus a
    `<video>` token, stock Video-LLaVA image and video processors, and a processor chat template."""
    from transformers import AddedToken, AutoTokenizer, VideoLlavaProcessor
    from transformers.models.video_llava import VideoLlavaImageProcessor, VideoLlavaVideoProcessor

    from duet_cli.catalog import models_dir

    tokenizer = AutoTokenizer.from_pretrained(models_dir() / "tiny-llava", local_files_only=True)
    tokenizer.add_tokens([AddedToken("<video>", special=True, normalized=False)], special_tokens=True)
    processor = VideoLlavaProcessor(
        image_processor=VideoLlavaImageProcessor(),
        video_processor=VideoLlavaVideoProcessor(),
        tokenizer=tokenizer,
        chat_template=chat_template,
    )
    config = copy.deepcopy(tiny_video_llava_config(depth=depth))
    config.text_config.vocab_size = len(tokenizer)
    config.text_config.pad_token_id = tokenizer.pad_token_id
    config.image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    config.video_token_id = tokenizer.convert_tokens_to_ids("<video>")
    torch.manual_seed(0)
    model = VideoLlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(root)
    processor.save_pretrained(root)
    return root
