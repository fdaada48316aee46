"""Build the bundled offline model `models/tiny-llava/`: random LLaVA-1.5 geometry, own tokenizer.

Run once from the repository root (deterministic; needs no network):
    HF_HUB_OFFLINE=1 python scripts/build_tiny_model.py [--out models/tiny-llava]

What it writes:
- a LlavaForConditionalGeneration with RANDOM (seeded) weights at the real LLaVA-1.5 patch geometry
  (CLIP 336 px / patch 14 -> 576 patches + CLS, 4 vision layers 64 wide; 8-layer Llama 128 wide, GQA 4/2),
  stored as bf16 safetensors so the folder stays small (~3.6 MB);
- a byte-level BPE tokenizer (vocab ~2000) trained here with `tokenizers` on a template corpus about
  shapes, colours, positions, counting, letters and digits, with the specials <unk> <s> </s> <pad> <image>;
- a LlavaProcessor (CLIP image processor at 336 px, 576 `<image>` placeholders per image), a generation
  config and a README model card. Answers of this model are meaningless: it is for offline tests and demos.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from PIL import Image, ImageDraw
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoProcessor,
    AutoTokenizer,
    CLIPImageProcessor,
    CLIPVisionConfig,
    GenerationConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

SEED = 0
VOCAB_SIZE = 2000
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]  # ids 0..4, in this order
PROMPT = "USER: <image>\n{question} ASSISTANT:"
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

VISION: dict[str, Any] = dict(
    image_size=336,
    patch_size=14,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
)
TEXT: dict[str, Any] = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=8,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    rms_norm_eps=1e-5,
)

# Chat template in the style of llava-hf/llava-1.5: "USER: <image>\n<text> ASSISTANT:".
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# ---------------------------------------------------------------------------------------------------------
# Corpus: English sentences from templates (deterministic).


def _words(text: str) -> list[str]:
    return text.split()


COLORS = _words(
    "red blue green yellow orange purple pink brown black white gray grey cyan magenta violet indigo "
    "teal navy maroon olive beige gold silver turquoise lavender crimson scarlet azure ivory tan"
)
SHAPES = _words(
    "circle square triangle rectangle star hexagon pentagon octagon oval diamond heart cross arrow "
    "line dot ring crescent cube sphere cone cylinder pyramid spiral arc polygon ellipse rhombus trapezoid"
)
POSITIONS = [
    "on the left",
    "on the right",
    "at the top",
    "at the bottom",
    "in the middle",
    "in the center",
    "in the top left corner",
    "in the top right corner",
    "in the bottom left corner",
    "in the bottom right corner",
    "above the square",
    "below the circle",
    "next to the triangle",
    "beside the star",
    "inside the ring",
    "outside the box",
    "behind the wall",
    "in front of the door",
    "between the two lines",
    "near the edge",
    "far from the center",
    "under the table",
    "over the hill",
]
NUMBER_WORDS = _words(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred "
    "thousand million first second third fourth fifth sixth seventh eighth ninth tenth"
)
SIZES = _words("small large big tiny huge little tall short wide narrow thick thin long round flat")
OBJECTS = _words(
    "cat dog bird fish horse cow sheep rabbit mouse lion tiger bear elephant monkey duck chicken apple "
    "banana orange grape lemon cherry pear peach melon carrot tomato potato bread cake pizza car bus "
    "truck bicycle train plane boat ship house tree flower grass cloud sun moon sky river road bridge "
    "table chair bed door window lamp clock phone book pen pencil paper cup bottle plate bowl spoon fork "
    "knife ball kite toy shoe hat shirt dress bag box key sign person man woman child boy girl people "
    "player team street city building mountain beach water snow rain light shadow picture image photo "
    "screen computer keyboard letter number word text label grid cell row column"
)
VERBS = _words(
    "is are has have holds shows contains sits stands lies runs walks flies swims eats drinks reads "
    "writes draws plays looks points moves touches covers surrounds crosses"
)
QUESTION_WORDS = _words("what which where when who whom whose why how")
EXTRA = _words(
    "yes no not maybe the a an this that these those there here it its and or but with without of in on "
    "at to from by for about into onto of color colour shape position count many much more less most "
    "least same different other another each every all some any none only both either neither "
    "describe answer question please tell me you can see do does did visible written printed shown "
    "drawn painted filled empty outlined background foreground left right top bottom middle center "
    "corner side edge half quarter part whole total sum equal greater smaller larger than"
)
COMMON = _words(
    "about above across after again against along also always among animal around asked away back "
    "because become been before began begin behind being below best better between body book both "
    "bring build built called came carry cause change children close cold come common complete could "
    "country course cut dark day deep distance does done down during early earth easy enough even "
    "evening example face fact family fast father feel feet field figure find fine fire follow food "
    "form found friend full game gave give go going good got great ground group grow hand hard head "
    "hear heard help high hold home hot hour idea important inch island just keep kind king knew know "
    "land language last late later learn leave life list little live long made make map mark measure "
    "might mind miss money morning mother move music must name need never new next night north note "
    "nothing notice now object often old once open order own page paper pass past pattern piece place "
    "plan plant point power problem product pull put quick quite ran reach ready real record remember "
    "rest rock room round rule said saw say school science sea second seem sentence set several ship "
    "should show simple since size slow someone something song soon sound south space special stand "
    "start state step still stood stop story strong study such sure surface system take talk teacher "
    "test their them then thing think thought through time together told took toward town travel true "
    "try turn under unit until upon usual very voice wait want warm watch wave way week weight well "
    "went were west while white whole wind wood work world would year young scene region area object "
    "objects background texture pixel patch token vision model language frame video region layer "
    "bright dark pale vivid striped dotted checkered shaded solid transparent glossy shiny dull"
)
LETTERS = [chr(c) for c in range(ord("A"), ord("Z") + 1)]
DIGITS = [str(d) for d in range(10)]


def build_corpus(seed: int = SEED) -> list[str]:
    """Template sentences covering the demo's vocabulary; the same list every run."""
    rng = random.Random(seed)
    lines: list[str] = []
    for color, shape in itertools.product(COLORS, SHAPES):
        pos = rng.choice(POSITIONS)
        size = rng.choice(SIZES)
        lines.append(f"USER: <image>\nWhat color is the {shape}? ASSISTANT: The {shape} is {color}.")
        lines.append(f"There is a {size} {color} {shape} {pos} of the image.")
        lines.append(f"Where is the {color} {shape}? It is {pos}.")
        lines.append(f"Which shape is {color}? The {color} one is a {shape}.")
    for n, shape in itertools.product(range(21), SHAPES):
        word = NUMBER_WORDS[n] if n < 20 else "twenty"
        plural = shape + ("es" if shape.endswith(("s", "x", "sh", "ch")) else "s")
        lines.append(f"How many {plural} are there? There are {n} {plural}, {word} in total.")
    for letter, digit, color in zip(LETTERS * 4, DIGITS * 11, itertools.cycle(COLORS), strict=False):
        lines.append(f'What letter is written in {color}? The letter "{letter}" is written in {color}.')
        lines.append(
            f"Which digit is in the cell? The digit {digit} is in the {rng.choice(NUMBER_WORDS)} cell."
        )
        lines.append(f"Read the text: {letter}{digit} {letter.lower()}{digit}{rng.choice(DIGITS)}.")
    for obj in OBJECTS:
        verb = rng.choice(VERBS)
        color = rng.choice(COLORS)
        lines.append(f"The {color} {obj} {verb} {rng.choice(POSITIONS)}.")
        lines.append(f"{rng.choice(QUESTION_WORDS).capitalize()} is the {obj} doing? The {obj} {verb}.")
        lines.append(f"Is there a {obj} in the picture? Yes, there is a {rng.choice(SIZES)} {obj}.")
        lines.append(f"Is there a {obj} in the photo? No, there is no {obj}.")
    for q in QUESTION_WORDS:
        for w in EXTRA:
            lines.append(f"{q.capitalize()} {w} {rng.choice(OBJECTS)} {rng.choice(VERBS)} {w}?")
    for i, word in enumerate(COMMON):
        other = COMMON[(i * 7 + 3) % len(COMMON)]
        lines.append(
            f"The {word} and the {other} are {rng.choice(POSITIONS)}; {word}s, {other}ing, {word}ed."
        )
        lines.append(f"{word.capitalize()} {rng.choice(VERBS)} {rng.choice(EXTRA)} {other}.")
    for i in range(300):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        lines.append(f"{a} plus {b} equals {a + b}. Count: {i}, {i + 1}, {i + 2}.")
    lines.append(" ".join(LETTERS) + " " + " ".join(DIGITS) + " " + " ".join(x.lower() for x in LETTERS))
    return lines


# ---------------------------------------------------------------------------------------------------------


def build_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(build_corpus(), trainer)
    bos = tok.token_to_id("<s>")
    # Like Llama: prepend <s>; ByteLevel post-processing keeps offsets on the word, not its leading space.
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=True),
            processors.TemplateProcessing(
                single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
            ),
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        padding_side="left",
        model_max_length=TEXT["max_position_embeddings"],
    )


def build_model(tokenizer: PreTrainedTokenizerFast) -> LlavaForConditionalGeneration:
    image_id = int(tokenizer.convert_tokens_to_ids("<image>"))  # type: ignore[arg-type]
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**VISION),
        text_config=LlamaConfig(
            **TEXT,
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=False,
        ),
        image_token_index=image_id,  # alias: config.image_token_id
        image_seq_length=(VISION["image_size"] // VISION["patch_size"]) ** 2,
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(SEED)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    return model.to(torch.bfloat16)


def build_processor(tokenizer: PreTrainedTokenizerFast) -> LlavaProcessor:
    side = VISION["image_size"]
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        do_convert_rgb=True,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=VISION["patch_size"],
        vision_feature_select_strategy="default",
        image_token="<image>",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )


def model_card(model: LlavaForConditionalGeneration, tokenizer: PreTrainedTokenizerFast) -> str:
    n_params = sum(p.numel() for p in model.parameters())
    prompt = PROMPT.replace("\n", "\\n")
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    return f"""# tiny-llava: an untrained LLaVA-1.5-shaped model for offline tests

**Random weights. Its answers are meaningless.** This folder exists so that `duet` can run end to
end (load, reduce visual tokens, generate, trace, profile, visualize) with no network and no real
checkpoint. It is never a stand-in for accuracy numbers: use a real checkpoint
(e.g. `llava-hf/llava-1.5-7b-hf`) for those.

## Architecture (stock `LlavaForConditionalGeneration`, transformers 5.x)

- Vision tower: CLIP ViT, image 336 px, patch 14: 24x24 = 576 patches + CLS = 577 tokens;
  hidden 64, MLP 128, 4 layers, 4 heads, quick-GELU.
- Features: `vision_feature_layer=-2`, `vision_feature_select_strategy="default"`
  (CLS dropped: 576 image tokens per image).
- Projector: 2-layer MLP with GELU, 64 -> 128 -> 128.
- Language model: Llama, hidden 128, MLP 256, 8 layers, 4 query heads / 2 KV heads
  (head dim 32), 2048 positions, RMSNorm eps 1e-5; untied input/output embeddings.
- Vocabulary: {len(tokenizer)} tokens, byte-level BPE. Specials: `<unk>`=0, `<s>`=1, `</s>`=2,
  `<pad>`={tokenizer.pad_token_id}, `<image>`={image_id}.
- Parameters: {n_params:,} ({n_params * 2 / 1e6:.1f} MB as bf16 safetensors).

Prompt format (as LLaVA-1.5): `{prompt}`. The processor expands `<image>` to 576
placeholders; padding is on the left.

## How it was built

```
HF_HUB_OFFLINE=1 python scripts/build_tiny_model.py
```

Deterministic (seed {SEED}): the tokenizer is trained with the `tokenizers` library on a built-in template
corpus (shapes, colours, positions, counting, letters, digits, question words); the weights are the
stock random initialisation of `LlavaForConditionalGeneration` under `torch.manual_seed({SEED})`, stored in
bfloat16 (pass `dtype=torch.float32` to `from_pretrained` for fp32 compute).
"""


def smoke_test(folder: Path) -> None:
    """Reload everything from `folder` offline and generate a few tokens."""
    model: Any = LlavaForConditionalGeneration.from_pretrained(folder, local_files_only=True)
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    image_id = model.config.image_token_id
    assert tokenizer("<image>", add_special_tokens=False).input_ids == [image_id]
    enc = tokenizer("USER: <image>\nWhat", return_offsets_mapping=True)
    assert "offset_mapping" in enc
    image = Image.new("RGB", (400, 300), (240, 240, 240))
    ImageDraw.Draw(image).ellipse((50, 50, 150, 150), fill=(220, 30, 30))
    inputs = processor(
        images=image, text=PROMPT.format(question="What color is the circle?"), return_tensors="pt"
    )
    n_image = int((inputs["input_ids"] == image_id).sum())
    assert n_image == 576, n_image
    prompt_len = inputs["input_ids"].shape[1]
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > prompt_len
    print(f"smoke test ok: {n_image} image tokens, generated {processor.decode(out[0, prompt_len:])!r}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    root = Path(__file__).resolve().parent.parent
    parser.add_argument("--out", type=Path, default=root / "models" / "tiny-llava")
    args = parser.parse_args()
    out: Path = args.out

    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    processor = build_processor(tokenizer)

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)  # also writes the tokenizer files
    (out / "README.md").write_text(model_card(model, tokenizer), encoding="utf-8")
    for file in out.iterdir():
        file.chmod(0o644)  # safetensors writes 0600; the folder ships in the repository and wheel
    smoke_test(out)
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    print(json.dumps(sizes, indent=1), f"total {sum(sizes.values()) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
