"""Prompts written with the checkpoint's own chat template, and LLaVA's pad-to-square, against stock.

Each family gets a checkpoint whose processor template differs from duet's family default (no system
message, other separators, the image after the question); `duet infer --profile baseline` must give the
stock `processor.apply_chat_template` + `processor(...)` + `generate()` prompt ids and answer exactly.
`--image-aspect pad` must feed the pixels a naive pad-then-process gives, and answer as the stock model
fed the padded image.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cli_runs import run_main
from PIL import Image
from typer.testing import CliRunner

from duet_cli import cli
from duet_cli.catalog import get_card, models_dir
from duet_cli.engine.training import IGNORE
from duet_cli.inputs.chat_template import ChatTemplate
from duet_cli.runtime import Prompt, build_inputs, load_model
from duet_cli.training.collate import encode
from duet_cli.training.data import Conversation

sys.path.insert(0, str(Path(__file__).parent))

ENV = {"COLUMNS": "200", "NO_COLOR": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
SHAPES = Path(__file__).parent.parent / "examples" / "shapes.png"

# the question first, then the image; no system message; "Q:"/"A:" instead of USER/ASSISTANT
LLAVA_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}Q: "
    "{% for c in m['content'] if c['type'] == 'text' %}{{ c['text'] }}{% endfor %} | "
    "{% for c in m['content'] if c['type'] == 'image' %}<image>{% endfor %}{{ '\\n' }}"
    "{% else %}A: {% for c in m['content'] %}{{ c['text'] }}{% endfor %}{{ '\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}A:{% endif %}"
)
# ChatML without Qwen's default system block, a space instead of the newline after each role
QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }} {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
)
VIDEO_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}> {% for c in m['content'] if c['type'] == 'video' %}<video>"
    "{% endfor %}{% for c in m['content'] if c['type'] == 'image' %}<image>{% endfor %} "
    "{% for c in m['content'] if c['type'] == 'text' %}{{ c['text'] }}{% endfor %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}assistant>{% endif %}"
)


def invoke(*args: str, code: int = 0) -> Any:
    result = CliRunner(env=ENV).invoke(cli.app, list(args))
    assert result.exit_code == code, (result.output, result.exception)
    return result


def set_template(folder: Path, template: str) -> None:
    (folder / "chat_template.jinja").write_text(template, encoding="utf-8")
    config = folder / "tokenizer_config.json"
    data = json.loads(config.read_text())
    data.pop("chat_template", None)
    config.write_text(json.dumps(data))


def stock(folder: Path, messages: list[dict[str, Any]], max_new_tokens: int = 6, **media: Any) -> tuple:
    """Prompt ids and greedy answer of the stock pipeline (apply_chat_template, processor, generate)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True).eval()
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[prompt], return_tensors="pt", **media)
    with torch.inference_mode():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=processor.tokenizer.pad_token_id,
        )
    answer = processor.tokenizer.batch_decode(
        out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
    )
    return inputs, answer[0].strip()


def user(question: str, *parts: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [*({"type": p} for p in parts), {"type": "text", "text": question}]}]


def baseline_inputs(loaded: Any, question: str, images: list[Image.Image]) -> dict[str, torch.Tensor]:
    """duet's model inputs for one prompt under `baseline`."""
    from duet_cli.engine.session import apply_profile
    from duet_cli.profiles import load_profile, resolve_profile

    profile = resolve_profile(load_profile("baseline"), loaded.adapter.dims(loaded.model))
    with apply_profile(loaded.model, profile) as session:
        return build_inputs(loaded, session, [Prompt(question, images)])


# -- LLaVA --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("llava-template") / "model"
    shutil.copytree(models_dir() / "tiny-llava", folder)
    set_template(folder, LLAVA_TEMPLATE)
    return folder


@pytest.mark.invariant
def test_llava_checkpoint_template_gives_the_stock_prompt_and_answer(llava: Path) -> None:
    question = "What color is the circle?"
    image = Image.open(SHAPES).convert("RGB")
    inputs, answer = stock(llava, user(question, "image"), images=[image])
    loaded = load_model(str(llava), device="cpu")
    ours = baseline_inputs(loaded, question, [image])
    assert torch.equal(ours["input_ids"], inputs["input_ids"])
    assert torch.equal(ours["pixel_values"], inputs["pixel_values"])
    assert loaded.chat.source == "checkpoint (processor)" and loaded.chat.jinja == LLAVA_TEMPLATE
    doc = json.loads(
        invoke("infer", "-m", str(llava), "-i", str(SHAPES), "-q", question, "-p", "baseline", "--json",
               "--max-new-tokens", "6").stdout
    )  # fmt: skip
    assert doc["results"][0]["answer"] == answer
    assert doc["provenance"]["chat_template"]["source"] == "checkpoint (processor)"
    assert doc["provenance"]["chat_template"]["kind"] == "jinja"
    table = invoke(
        "infer", "-m", str(llava), "-i", str(SHAPES), "-q", question, "--max-new-tokens", "2"
    ).stdout
    assert "chat template: checkpoint (processor)" in table


def test_a_folder_without_a_template_uses_the_family_default(llava: Path, tmp_path: Path) -> None:
    folder = tmp_path / "bare"
    shutil.copytree(llava, folder)
    (folder / "chat_template.jinja").unlink()
    loaded = load_model(str(folder), device="cpu")
    assert (loaded.chat.source, loaded.chat.kind) == ("llava default", "duet")
    assert loaded.chat.prompt(loaded, "Q?", [2]) == ("USER: <image><image>\nQ? ASSISTANT:", 21)


def test_chat_template_option_overrides_with_a_string_or_a_file(llava: Path, tmp_path: Path) -> None:
    question = "What color is the circle?"
    file = tmp_path / "mine.jinja"
    file.write_text(LLAVA_TEMPLATE.replace("Q: ", "Question: "), encoding="utf-8")
    doc = json.loads(
        invoke("infer", "-i", str(SHAPES), "-q", question, "--chat-template", str(file), "--json",
               "--max-new-tokens", "2").stdout
    )  # fmt: skip
    assert doc["provenance"]["chat_template"]["source"] == f"--chat-template {file}"
    loaded = load_model("tiny-llava", device="cpu", chat_template="USER {question} <image> BOT:")
    assert (loaded.chat.source, loaded.chat.kind) == ("--chat-template", "duet")
    assert loaded.chat.prompt(loaded, "Q?", [1])[0] == "USER Q? <image> BOT:"
    loaded = load_model("tiny-llava", device="cpu", chat_template=str(file))
    assert loaded.chat.prompt(loaded, "Q?", [2])[0] == "Question: Q? | <image><image>\nA:"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("just words", "neither a Jinja chat template"),
        ("missing/template.jinja", "not found"),
        ("{% for c in messages[0]['content'] %}<image>{{ c['text'] | upper }}{% endfor %}", "question once"),
        ("<image>{{ messages[0]['content'][-1]['text'] | replace('?', ' ?') }}", "rewrites the question"),
        ("{% for m in messages %}{{ m['content'][1]['text'] }}{% endfor %}", "image markers"),
        ("{% for m in messages %}{{ m.nope.deeper }}{% endfor %}", "cannot be rendered"),
        ("{% if %}", "cannot be rendered"),
    ],
)
def test_a_bad_chat_template_is_one_line(
    value: str, says: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, stderr = run_main(
        monkeypatch, capsys, ["infer", "-i", str(SHAPES), "-q", "What?", "--chat-template", value]
    )
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and says in lines[0], stderr
    assert lines[0].startswith("error:")


def test_a_jinja_template_writes_the_system_message_itself(llava: Path) -> None:
    from duet_cli.api import with_system_prompt
    from duet_cli.errors import InputError

    loaded = load_model("tiny-llava", device="cpu")  # the llava-hf template prints a system message's text
    changed = with_system_prompt(loaded, "Be brief.")
    assert changed.chat.prompt(changed, "Q?", [1])[0] == "Be brief. USER: <image>\nQ? ASSISTANT:"
    assert changed.chat.describe()["system"] == "Be brief."
    with pytest.raises(InputError, match="does not write a system message"):
        users_only = (
            "{% for m in messages if m['role'] == 'user' %}{% for c in m['content'] %}"
            "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}"
        )
        with_system_prompt(load_model("tiny-llava", device="cpu", chat_template=users_only), "Be brief.")


def test_training_labels_are_exactly_the_templates_assistant_turns(llava: Path) -> None:
    loaded = load_model(str(llava), device="cpu")
    conv = Conversation(
        id="c1", image="x.png", turns=[("Which shape?", "a red circle"), ("And then?", "two")]
    )
    enc = encode(loaded, conv, 3, loaded.adapter.image_token_id(loaded.model))
    text = "Q: Which shape? | <image><image><image>\nA: a red circle</s>\nQ: And then? | \nA: two</s>\n"
    tok = loaded.tokenizer(text, return_offsets_mapping=True)
    assert enc.input_ids == tok["input_ids"]  # the template's text, eos added where no special token closes
    spans = [(text.index("a red circle"), text.index("</s>") + 4), (text.index("two"), len(text) - 1)]
    want = [
        i
        for i, (s, e) in enumerate(tok["offset_mapping"])
        if e > s and any(s < b and e > a for a, b in spans)
    ]
    assert [i for i, t in enumerate(enc.labels) if t != IGNORE] == want
    decoded = loaded.tokenizer.decode([t for t in enc.labels if t != IGNORE])
    assert decoded.replace(" ", "") == "aredcircle</s>two</s>"


# -- Qwen2.5-VL ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_qwen import save_tiny_qwen

    folder = Path(save_tiny_qwen(str(tmp_path_factory.mktemp("qwen-template"))))
    set_template(folder, QWEN_TEMPLATE)
    return folder


@pytest.mark.invariant
def test_qwen_template_without_a_system_message_gives_the_stock_answer(qwen: Path) -> None:
    question = "what color is the circle ?"
    image = Image.open(SHAPES).convert("RGB")
    inputs, answer = stock(qwen, user(question, "image"), images=[image])
    loaded = load_model(str(qwen), device="cpu")
    ours = baseline_inputs(loaded, question, [image])
    assert torch.equal(ours["input_ids"], inputs["input_ids"])
    assert loaded.chat.source == "checkpoint (processor)"
    assert "system" not in loaded.tokenizer.decode(ours["input_ids"][0])
    doc = json.loads(
        invoke("infer", "-m", str(qwen), "-i", str(SHAPES), "-q", question, "-p", "baseline", "--json",
               "--max-new-tokens", "6").stdout
    )  # fmt: skip
    assert doc["results"][0]["answer"] == answer
    assert doc["provenance"]["chat_template"]["source"] == "checkpoint (processor)"
    assert doc["provenance"]["image_aspect"] == "native"


def test_qwen_training_labels_end_at_the_templates_im_end(qwen: Path) -> None:
    loaded = load_model(str(qwen), device="cpu")
    conv = Conversation(id="q1", image="x.png", turns=[("what color ?", "red"), ("how many ?", "two")])
    enc = encode(loaded, conv, 2, loaded.adapter.image_token_id(loaded.model))
    labelled = loaded.tokenizer.convert_ids_to_tokens([t for t in enc.labels if t != IGNORE])
    assert labelled == ["red", "<|im_end|>", "two", "<|im_end|>"]  # no eos added: <|im_end|> closes a turn


def test_image_aspect_does_not_apply_to_qwen(qwen: Path) -> None:
    from duet_cli.errors import UsageError

    with pytest.raises(UsageError, match=r"Qwen2\.5-VL keeps each image's aspect ratio"):
        load_model(str(qwen), device="cpu", image_aspect="pad")


# -- Video-LLaVA --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video_llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_video import save_tiny_video_llava

    return save_tiny_video_llava(
        tmp_path_factory.mktemp("video-template"), depth=4, chat_template=VIDEO_TEMPLATE
    )


@pytest.mark.invariant
def test_video_llava_template_gives_the_stock_answer_on_a_video(video_llava: Path, tmp_path: Path) -> None:
    from tiny_video import write_video

    from duet_cli.inputs.video import load_video

    clip = write_video(tmp_path / "clip.mp4", 16)
    frames = load_video(clip, 4).frames
    question = "What happens?"
    _, answer = stock(video_llava, user(question, "video"), videos=[frames])
    doc = json.loads(
        invoke("infer", "-m", str(video_llava), "--video", str(clip), "--frames", "4", "-q", question, "-p",
               "baseline", "--json", "--max-new-tokens", "6").stdout
    )  # fmt: skip
    assert doc["results"][0]["answer"] == answer
    assert doc["provenance"]["chat_template"]["source"] == "checkpoint (processor)"


# -- LLaVA-1.5's pad-to-square ------------------------------------------------------------------------


def wide_image(tmp_path: Path) -> Path:
    """A 2:1 image with a red band on the far left and a blue band on the far right."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(60, 200, size=(120, 240, 3), dtype=np.uint8)
    pixels[:, :30] = (255, 0, 0)
    pixels[:, -30:] = (0, 0, 255)
    path = tmp_path / "wide.png"
    Image.fromarray(pixels).save(path)
    return path


def naive_pad(image: Image.Image, mean: list[float]) -> Image.Image:
    w, h = image.size
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), tuple(int(m * 255) for m in mean))
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


@pytest.mark.invariant
def test_pad_feeds_a_naive_pad_then_process_and_answers_as_stock(tmp_path: Path) -> None:
    from transformers import AutoProcessor

    path = wide_image(tmp_path)
    image = Image.open(path).convert("RGB")
    folder = models_dir() / "tiny-llava"
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    padded = naive_pad(image, list(processor.image_processor.image_mean))
    want = processor.image_processor([padded], return_tensors="pt")["pixel_values"]
    cropped = processor.image_processor([image], return_tensors="pt")["pixel_values"]
    from duet_cli.engine.session import apply_profile
    from duet_cli.profiles import load_profile, resolve_profile

    for aspect, expected in (("pad", want), ("crop", cropped), (None, cropped)):
        loaded = load_model("tiny-llava", device="cpu", image_aspect=aspect)
        profile = resolve_profile(load_profile("baseline"), loaded.adapter.dims(loaded.model))
        with apply_profile(loaded.model, profile) as session:
            got = build_inputs(loaded, session, [Prompt("What?", [image])])["pixel_values"]
        assert torch.equal(got, expected), aspect
    assert not torch.equal(want, cropped)
    question = "What color is the circle?"
    _, answer = stock(folder, user(question, "image"), images=[padded])
    doc = json.loads(
        invoke("infer", "-m", "tiny-llava", "-i", str(path), "-q", question, "-p", "baseline",
               "--image-aspect", "pad", "--json", "--max-new-tokens", "6").stdout
    )  # fmt: skip
    assert doc["results"][0]["answer"] == answer and doc["provenance"]["image_aspect"] == "pad"


def test_visualize_with_pad_shows_the_whole_image(tmp_path: Path) -> None:
    path = wide_image(tmp_path)

    def colours(aspect: str) -> tuple[bool, bool]:
        out = tmp_path / f"{aspect}.png"
        invoke("visualize", "-m", "tiny-llava", "-i", str(path), "-q", "What?", "-p", "baseline",
               "--image-aspect", aspect, "--max-new-tokens", "1", "-o", str(out))  # fmt: skip
        px = np.asarray(Image.open(out).convert("RGB")).astype(int)
        red = (px[..., 0] > 230) & (px[..., 1] < 30) & (px[..., 2] < 30)
        blue = (px[..., 2] > 230) & (px[..., 0] < 30) & (px[..., 1] < 30)
        return bool(red.sum() > 100), bool(blue.sum() > 100)

    assert colours("pad") == (True, True)  # both edge bands are in view
    assert colours("crop") == (False, False)  # the centre crop cuts both away


def test_llava_15_cards_pad_and_other_cards_crop() -> None:
    assert get_card("llava-1.5-7b").image_aspect == get_card("llava-1.5-13b").image_aspect == "pad"
    assert get_card("tiny-llava").image_aspect is None  # its processor's centre crop
    assert load_model("tiny-llava", device="cpu").image_aspect == "crop"


def test_eval_refuses_to_resume_predictions_made_under_another_aspect(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    args = ["eval", "-m", "tiny-llava", "-B", "synth", "--limit", "2", "-p", "baseline", "--out", str(out),
            "--max-new-tokens", "2"]  # fmt: skip
    doc = json.loads(invoke(*args, "--image-aspect", "pad", "--json").stdout)
    assert doc["provenance"]["image_aspect"] == "pad"
    assert doc["provenance"]["chat_template"]["source"] == "checkpoint (processor)"
    from duet_cli.errors import InputError

    result = CliRunner(env=ENV).invoke(cli.app, [*args, "--image-aspect", "crop"])
    assert isinstance(result.exception, InputError)
    assert "image_aspect" in str(result.exception) and "made with other settings" in str(result.exception)


def test_duet_form_template_keeps_its_old_prompts() -> None:
    loaded = load_model("tiny-llava", device="cpu")
    card = ChatTemplate("card", text="USER: <image>\n{question} ASSISTANT:")
    assert card.prompt(loaded, "Q?", [2, 2]) == loaded.chat.prompt(loaded, "Q?", [2, 2])
