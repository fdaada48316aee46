"""`duet train` on a tiny Qwen2.5-VL saved as a folder: each image gets its own placeholder count, the
batch carries image_grid_thw and mm_token_type_ids, the patch merger is the projector part, and the
training forward under a keep-everything stage 2 equals the stock model's loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_qwen import save_tiny_qwen
from typer.testing import CliRunner

from duet_cli import cli
from duet_cli.engine.session import apply_profile
from duet_cli.engine.training import reduced_loss
from duet_cli.profiles import load_profile
from duet_cli.runtime import load_model
from duet_cli.training.plan import TrainConfig, make_plan
from duet_cli.training.trainer import Batches, set_trainable

pytestmark = pytest.mark.usefixtures("one_thread")

# 112 x 56 px -> 8 x 4 patches -> 8 merged tokens; 84 x 84 px -> 6 x 6 patches -> 9 merged tokens
SIZES = [(112, 56), (84, 84)]


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(save_tiny_qwen(str(tmp_path_factory.mktemp("tiny-qwen"))))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("qwen-data")
    records = []
    for i, (w, h) in enumerate(SIZES):
        g = torch.Generator().manual_seed(i)
        pixels = torch.randint(0, 255, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(root / f"{i}.png")
        turns = [
            {"from": "human", "value": "<image>\nwhat color is the circle ?"},
            {"from": "gpt", "value": ["red", "blue"][i]},
            {"from": "human", "value": "how many shapes are there ?"},
            {"from": "gpt", "value": "two"},
        ]
        records.append({"id": f"q{i}", "image": f"{i}.png", "conversations": turns})
    (root / "data.json").write_text(json.dumps(records))
    return root / "data.json"


def write_profile(folder: Path, name: str, body: dict) -> Path:
    import yaml

    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **body}))
    return path


def test_batches_give_each_image_its_own_count(qwen_folder: Path, data: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(data=str(data), out=tmp_path / "out", model=str(qwen_folder), device="cpu")
    plan = make_plan(cfg)
    loaded = load_model(str(qwen_folder), dtype="float32", device="cpu")
    with apply_profile(loaded.model, plan.profile) as session:
        batches = Batches(plan, loaded, session, torch.device("cpu"))
        convs, enc, pixels = batches.encoded([0, 1])
        batch = batches.batch(convs, enc, pixels)
    image_id = loaded.adapter.image_token_id(loaded.model)
    assert (batch["input_ids"] == image_id).sum(dim=1).tolist() == [8, 9]
    assert batch["image_grid_thw"].tolist() == [[1, 4, 8], [1, 6, 6]]
    assert batch["pixel_values"].shape[0] == 32 + 36
    torch.testing.assert_close(batch["mm_token_type_ids"], (batch["input_ids"] == image_id).int())
    # ChatML turns: the answer follows "assistant\n" directly and every turn ends "<|im_end|>\n"
    text = loaded.tokenizer.decode(enc[0].input_ids)
    assert "<|im_start|> assistant" in text or "<|im_start|>assistant" in text
    labelled = [t for t, lab in zip(enc[0].input_ids, enc[0].labels) if lab != -100]
    assert loaded.tokenizer.decode(labelled).split() == ["red", "</s>", "two", "</s>"]


def test_chatml_conversation_text_has_one_system_block() -> None:
    from duet_cli.families.qwen2_5_vl import Qwen25VLAdapter
    from duet_cli.training.collate import conversation_text

    adapter = Qwen25VLAdapter()
    turns = [("Q1?", "A1"), ("Q2?", "A2")]
    text, spans = conversation_text(adapter, adapter.default_template, turns, "<|im_end|>", 2)
    pads = "<|vision_start|><|image_pad|><|image_pad|><|vision_end|>"
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{pads}Q1?<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
        "<|im_start|>user\nQ2?<|im_end|>\n<|im_start|>assistant\nA2<|im_end|>\n"
    )
    assert [text[a:b] for a, b in spans] == ["A1<|im_end|>", "A2<|im_end|>"]


def test_keep_everything_training_loss_equals_stock(qwen_folder: Path, data: Path, tmp_path: Path) -> None:
    llm = {"method": "pyramiddrop", "at_depth": [0.5, 0.75], "keep_ratios": [1.0, 1.0]}
    llm["queries"] = "after_image"
    keep_all = load_profile(str(write_profile(tmp_path, "keep-all", {"llm": llm})))
    cfg = TrainConfig(data=str(data), out=tmp_path / "out", model=str(qwen_folder), device="cpu")
    plan = make_plan(cfg)
    loaded = load_model(str(qwen_folder), dtype="float32", device="cpu")
    with apply_profile(loaded.model, plan.profile) as session:  # baseline: build the batch
        batches = Batches(plan, loaded, session, torch.device("cpu"))
        batch = batches.batch(*batches.encoded([0, 1]))
    stock = loaded.model(**batch).loss  # the stock forward: M-RoPE from image_grid_thw, shifted CE
    with apply_profile(loaded.model, keep_all) as session:
        parts = reduced_loss(loaded.model, session, batch)
        drops = [len(row.drops) for row in session.recorder.rows]
    assert drops == [2, 2]  # stage 2 really ran, keeping everything
    assert parts.tokens == 8  # "red</s>two</s>" and "blue</s>two</s>"
    torch.testing.assert_close(parts.loss_sum / parts.tokens, stock, rtol=1e-5, atol=1e-5)


def test_merger_is_the_projector_part(qwen_folder: Path) -> None:
    loaded = load_model(str(qwen_folder), dtype="float32", device="cpu")
    model = loaded.model
    merger = sum(p.numel() for p in model.model.visual.merger.parameters())
    assert set_trainable(model, loaded.adapter, ("projector",)) == merger
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("model.visual.merger.") for n in trainable)
    visual = sum(p.numel() for p in model.model.visual.parameters())
    assert set_trainable(model, loaded.adapter, ("vision",)) == visual - merger


def test_cli_train_with_stage1_and_stage2(qwen_folder: Path, data: Path, tmp_path: Path) -> None:
    prof = write_profile(
        tmp_path,
        "qwen-small",
        {
            "vision": {"method": "visionzip", "dominant": 5, "contextual": 1},
            "llm": {"method": "pyramiddrop", "at_depth": [0.5, 0.75], "keep_ratios": [0.5, 0.25]},
        },
    )
    args = ["train", "-m", str(qwen_folder), "--data", str(data), "-p", str(prof)]
    args += ["--out", str(tmp_path / "o")]
    result = CliRunner().invoke(
        cli.app, [*args, "--max-steps", "2", "--batch-size", "2", "--lr", "1e-3", "--device", "cpu", "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout[result.stdout.index("{") :])
    # both images: 5 dominant + 1 contextual = 6 tokens enter; layers 1-4: 6, 5-6: 3, 7-8: 1
    assert doc["visual_tokens_in"] == 6.0
    assert doc["avg_visual_tokens"] == (4 * 6 + 2 * 3 + 2 * 1) / 8
    assert doc["unreduced_visual_tokens"] == (8 + 9) / 2
    assert all(torch.isfinite(torch.tensor(h[1])) for h in doc["history"])
    from duet_cli import api

    report = api.infer(str(tmp_path / "o" / "model"), str(prof), [("what color ?", [data.parent / "0.png"])])
    assert report.trace.samples[0].visual_tokens_in == 6  # the saved folder loads and runs the profile
