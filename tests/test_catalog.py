"""Model catalog: cards, name/folder/hub-id resolution (offline, fast failures) and the bundled model."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from duet_cli import catalog
from duet_cli.catalog import (
    ARCHITECTURE_KEYS,
    DEFAULT_MODEL,
    dims_for,
    get_card,
    list_cards,
    resolve_model,
)
from duet_cli.dims import ModelDims, dims_from_config
from duet_cli.errors import ModelNotFoundError
from duet_cli.resources import models_dir


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_every_card_loads_with_architecture_keys() -> None:
    cards = list_cards()
    assert {"llava-1.5-7b", "llava-1.5-13b", "tiny-llava"} <= {c.name for c in cards}
    assert len(cards) == len(list(models_dir().glob("*.yaml")))
    for card in cards:
        assert (card.hub_id is None) != (card.path is None), card.name
        assert "{question}" in card.chat_template
        assert ("<video>" if card.family == "video_llava" else "<image>") in card.chat_template
        for part, keys in ARCHITECTURE_KEYS.items():
            assert set(keys) <= set(card.architecture[part]), (card.name, part)
        text = card.architecture["text"]
        assert text["hidden_size"] == text["num_heads"] * text["head_dim"], card.name
    assert get_card("tiny-llava").untrained
    assert not get_card(DEFAULT_MODEL).untrained  # the bundled trained synth-llava
    assert get_card(DEFAULT_MODEL).path is not None
    assert not get_card("llava-1.5-7b").untrained


def test_dims_for_llava_7b_from_card() -> None:
    assert dims_for("llava-1.5-7b") == ModelDims(
        family="llava", num_layers=32, vision_tokens=577, has_cls=True, unreduced_tokens=576, grid=(24, 24)
    )
    assert dims_for("llava-1.5-13b").num_layers == 40


def test_dims_of_bundled_folder_match_its_config_and_card(offline: None) -> None:
    from transformers import AutoConfig

    folder = get_card("tiny-llava").path
    assert folder is not None
    from_config = dims_from_config(AutoConfig.from_pretrained(folder, local_files_only=True))
    assert dims_for(str(folder)) == from_config
    assert dims_for("tiny-llava") == from_config
    assert from_config.vision_tokens == 577 and from_config.grid == (24, 24)


def test_tiny_card_architecture_matches_built_config(offline: None) -> None:
    from transformers import AutoConfig

    card = get_card("tiny-llava")
    config = AutoConfig.from_pretrained(card.path, local_files_only=True)
    vision, text = card.architecture["vision"], card.architecture["text"]
    vc, tc = config.vision_config, config.text_config
    assert (vc.image_size, vc.patch_size, vc.hidden_size) == (vision["image_size"], vision["patch_size"], 64)
    assert (vc.intermediate_size, vc.num_hidden_layers) == (vision["intermediate_size"], vision["num_layers"])
    assert vc.num_attention_heads == vision["num_heads"]
    assert config.vision_feature_layer == vision["feature_layer"]
    assert config.vision_feature_select_strategy == vision["select_strategy"]
    assert (tc.hidden_size, tc.intermediate_size) == (text["hidden_size"], text["intermediate_size"])
    assert (tc.num_hidden_layers, tc.num_attention_heads) == (text["num_layers"], text["num_heads"])
    assert (tc.num_key_value_heads, tc.vocab_size, tc.head_dim) == (
        text["num_kv_heads"],
        text["vocab_size"],
        text["head_dim"],
    )


def test_resolve_bundled_model_is_local() -> None:
    resolved = resolve_model("tiny-llava")
    assert resolved.local_files_only
    assert resolved.card is not None and resolved.card.name == "tiny-llava"
    assert Path(resolved.source).is_absolute()
    assert (Path(resolved.source) / "config.json").is_file()


def test_resolve_local_folder(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    resolved = resolve_model(str(tmp_path))
    assert resolved.local_files_only and resolved.card is None
    assert Path(resolved.source) == tmp_path.resolve()


def test_unknown_name_suggests_close_match() -> None:
    with pytest.raises(ModelNotFoundError) as err:
        get_card("llava-1.5-7")
    message = str(err.value)
    assert "unknown model 'llava-1.5-7'" in message
    assert "Did you mean: llava-1.5-7b" in message
    assert "Available:" in message and "tiny-llava" in message
    with pytest.raises(ModelNotFoundError, match="Did you mean: tiny-llava"):
        resolve_model("tiny-lava")
    with pytest.raises(ModelNotFoundError, match="empty"):
        resolve_model("  ")


@pytest.mark.parametrize("spec", ["llava-hf/llava-1.5-7b-hf", "llava-1.5-7b", "nobody/no-such-model"])
def test_uncached_hub_id_fails_fast_offline(
    spec: str, offline: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog, "_in_hf_cache", lambda repo_id: False)
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model(spec)
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert "\n" not in message
    repo_id = spec if "/" in spec else "llava-hf/llava-1.5-7b-hf"
    assert f"model '{repo_id}' is not available offline" in message
    assert "Hugging Face cache" in message and "local folder" in message


def test_unreachable_hub_fails_fast_without_offline_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused at once
    monkeypatch.setattr(catalog, "_in_hf_cache", lambda repo_id: False)
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError, match="cannot be reached"):
        resolve_model("nobody/no-such-model")
    assert time.monotonic() - start < 5


def test_cached_hub_id_resolves_local_only(offline: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "_in_hf_cache", lambda repo_id: repo_id == "llava-hf/llava-1.5-7b-hf")
    resolved = resolve_model("llava-1.5-7b")
    assert resolved.source == "llava-hf/llava-1.5-7b-hf" and resolved.local_files_only
    by_id = resolve_model("llava-hf/llava-1.5-7b-hf")
    assert by_id.card is not None and by_id.card.name == "llava-1.5-7b"


def test_folder_without_config_fails_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    with pytest.raises(ModelNotFoundError, match=r"my-model.*config\.json"):
        resolve_model(str(folder))
    file = tmp_path / "weights.bin"
    file.write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match=r"weights\.bin"):
        resolve_model(str(file))
    with pytest.raises(ModelNotFoundError, match=r"missing-dir.*does not exist"):
        resolve_model(str(tmp_path / "missing-dir"))


def test_bad_card_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken.yaml").write_text("name: broken\nfamily: llava\narchitecture: {vision: {}}\n")
    monkeypatch.setattr(catalog, "models_dir", lambda: tmp_path)
    with pytest.raises(
        ModelNotFoundError, match=r"broken\.yaml is missing: .*architecture\.vision\.image_size"
    ):
        list_cards()


def test_bundled_model_loads_offline_and_generates(offline: None) -> None:
    import torch
    from PIL import Image
    from transformers import AutoProcessor, AutoTokenizer, LlavaForConditionalGeneration

    card = get_card("tiny-llava")
    source = resolve_model("tiny-llava").source
    model = LlavaForConditionalGeneration.from_pretrained(source, local_files_only=True, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(source, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    image_id = model.config.image_token_id
    assert tokenizer("<image>", add_special_tokens=False).input_ids == [image_id]
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id is not None
    enc = tokenizer("What color is the circle?", return_offsets_mapping=True)
    assert len(enc["offset_mapping"]) == len(enc["input_ids"])

    prompt = card.chat_template.format(question="What color is the circle?")
    inputs = processor(images=Image.new("RGB", (400, 300), "white"), text=prompt, return_tensors="pt")
    assert int((inputs["input_ids"] == image_id).sum()) == 576
    assert tuple(inputs["pixel_values"].shape) == (1, 3, 336, 336)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3 or int(out[0, -1]) == tokenizer.eos_token_id


def test_duet_model_overrides_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from duet_cli.catalog import MODEL_ENV, default_model

    monkeypatch.setenv(MODEL_ENV, "llava-1.5-7b")
    assert default_model() == "llava-1.5-7b"
    monkeypatch.setenv(MODEL_ENV, "  ")
    assert default_model() == DEFAULT_MODEL
    monkeypatch.delenv(MODEL_ENV)
    assert default_model() == DEFAULT_MODEL
