"""`duet profile`: the measured path on the bundled tiny-llava and on a tiny Qwen2.5-VL folder, --json equal
to the tables, and --config-only on the llava-1.5-7b and qwen2.5-vl-7b cards offline with no weights (FLOPs
equal flops.py or hand arithmetic, KV bytes equal the ledger by hand).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from typer.testing import CliRunner

from duet_cli import cli, runtime
from duet_cli.catalog import get_card
from duet_cli.cost import profiling
from duet_cli.cost.flops import Architecture, decode_step_flops, prefill_flops
from duet_cli.errors import UsageError
from duet_cli.reports.render_profile import fmt_gflops, fmt_mib, fmt_ms, fmt_ratio

ENV = {"COLUMNS": "240", "TERMINAL_WIDTH": "240", "NO_COLOR": "1"}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
MEASURED = ["profile", "--device", "cpu", "--repeats", "1", "--warmup", "0", "--max-new-tokens", "2"]


def invoke(args: list[str]) -> Any:
    result = CliRunner(env=ENV).invoke(cli.app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def tables(text: str) -> list[dict[str, list[str]]]:
    """Every box-drawn table as {first cell: other cells}, in order (one-line rows only)."""
    found: list[dict[str, list[str]]] = []
    for line in ANSI.sub("", text).splitlines():
        if line.startswith("┏"):
            found.append({})
        elif line.startswith("│") and found:
            first, *cells = [c.strip() for c in line.strip().strip("│").split("│")]
            found[-1][first] = cells
    return found


def measured_run(args: list[str]) -> tuple[str, dict[str, Any]]:
    """One real measured run printed as tables (with --layers), then the same report printed as --json."""
    captured: list[profiling.ProfileReport] = []
    real = profiling.profile_measured

    def capture(*a: Any, **k: Any) -> profiling.ProfileReport:
        captured.append(real(*a, **k))
        return captured[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(profiling, "profile_measured", capture)
        table_text = invoke([*args, "--layers"]).stdout
        mp.setattr(profiling, "profile_measured", lambda *a, **k: captured[0])
        doc = json.loads(invoke([*args, "--json"]).stdout)
    return table_text, doc


@pytest.fixture(scope="module")
def measured() -> tuple[str, dict[str, Any]]:
    return measured_run([*MEASURED, "--profile", "duet-192"])


def assert_tables_equal_json(text: str, doc: dict[str, Any]) -> dict[str, list[str]]:
    """Every number of the tokens, FLOPs and measured tables is its --json number; returns the ledger."""
    tokens, flops, timed, ledger = tables(text)
    for r in doc["numbers"]["rows"]:
        name, f, m = r["profile"], r["flops"], r["measured"]
        assert tokens[name][:4] == [
            str(r["tokens_in"]),
            str(r["unreduced"]),
            f"{r['avg_visual_tokens']:.2f}",
            fmt_mib(r["kv_cache_bytes"]),
        ]
        expected = [
            fmt_gflops(f[k][c]) for k in ("vision", "prefill", "decode_step") for c in ("paper", "actual")
        ]
        assert flops[name] == [*expected, fmt_ratio(r["bound"])]
        assert timed[name] == [
            fmt_ms(m["vision_ms"]),
            fmt_ms(m["prefill_ms"]),
            fmt_ms(m["decode_ms_per_token"]),
            "n/a",
            fmt_ratio(m["speedup"]),
            fmt_ratio(r["bound"]),
        ]
    return ledger


def test_measured_rows_on_tiny_llava(measured: tuple[str, dict[str, Any]]) -> None:
    _, doc = measured
    numbers = doc["numbers"]
    assert numbers["model"] == "tiny-llava" and numbers["config_only"] is False
    assert [r["profile"] for r in numbers["rows"]] == ["baseline", "duet-192"]
    base, duet = numbers["rows"]
    # the trace's ledger is the profile arithmetic: tiny-llava has 8 layers, duet-192 drops after 4 and 6
    assert base["ledger"] == [576] * 8
    assert duet["ledger"] == [307] * 4 + [153] * 2 + [0] * 2
    assert duet["avg_visual_tokens"] == 191.75
    for row in numbers["rows"]:
        m = row["measured"]
        assert m["prefill_ms"]["median"] > 0 and m["vision_ms"]["median"] > 0
        assert len(m["prefill_ms"]["runs"]) == 1
        assert m["decode_ms_per_token"]["median"] > 0
        assert m["peak_memory_bytes"] is None  # CPU: no honest per-profile peak
    assert base["measured"]["speedup"] == 1.0
    assert numbers["process_max_rss_bytes"] > 0
    # FLOPs equal flops.py on the tiny card with the counted text tokens; KV bytes by hand (fp32):
    # 2 * 2 kv heads * 32 head_dim * 4 bytes = 512 bytes per token per layer
    arch = Architecture.from_card(get_card("tiny-llava").architecture, "llava")
    t = numbers["text_tokens"]
    assert 10 < t < 40 and numbers["kv_bytes_per_element"] == 4
    assert duet["kv_cache_bytes"] == 512 * (4 * (307 + t) + 2 * (153 + t) + 2 * t)
    assert base["kv_cache_bytes"] == 512 * 8 * (576 + t)
    assert base["flops"]["prefill"]["actual"] == prefill_flops(arch.text, [576] * 8, t).actual
    assert base["flops"]["decode_step"]["actual"] == decode_step_flops(arch.text, [576 + t] * 8).actual
    assert base["bound"] == 1.0 and duet["bound"] > 1.0


def test_json_equals_tables(measured: tuple[str, dict[str, Any]]) -> None:
    text, doc = measured
    ledger = assert_tables_equal_json(text, doc)
    assert doc["numbers"]["image_grid"] == {"t": 1, "h": 24, "w": 24, "source": "fixed"}
    assert (
        ledger["1-4"] == ["576", "307"] and ledger["5-6"] == ["576", "153"] and ledger["7-8"] == ["576", "0"]
    )


def test_config_only_llava_7b_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_weights(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("--config-only must not load a model")

    monkeypatch.setattr(runtime, "load_model", no_weights)
    args = ["profile", "--config-only", "--model", "llava-1.5-7b", "-p", "duet-192", "-p", "pdrop-192"]
    doc = json.loads(invoke([*args, "--json"]).stdout)["numbers"]
    assert doc["text_tokens"] == profiling.DEFAULT_TEXT_TOKENS == 24
    assert doc["text_tokens_source"] == "assumed"
    base, duet, pdrop = doc["rows"]
    assert [base["profile"], duet["profile"], pdrop["profile"]] == ["baseline", "duet-192", "pdrop-192"]
    arch = Architecture.from_card(get_card("llava-1.5-7b").architecture, "llava")
    duet_ledger = [307] * 16 + [153] * 8 + [0] * 8
    assert duet["ledger"] == duet_ledger
    assert base["flops"]["prefill"]["actual"] == prefill_flops(arch.text, [576] * 32, 24).actual
    assert base["flops"]["prefill"]["paper"] == prefill_flops(arch.text, [576] * 32, 24).paper
    no_ranking = prefill_flops(arch.text, duet_ledger, 24)
    ranking = duet["flops"]["overhead"]["stage2_ranking"]
    assert 0 < ranking < 0.01 * no_ranking.actual  # q/k for 24 query rows at 2 drop points: small
    assert duet["flops"]["prefill"]["actual"] == no_ranking.actual + ranking
    assert duet["flops"]["prefill"]["paper"] == no_ranking.paper
    # KV cache in bf16: 2 * 32 kv heads * 128 * 2 bytes = 16384 bytes per token per layer
    assert base["kv_cache_bytes"] == 16384 * 32 * 600 == 314_572_800
    assert duet["kv_cache_bytes"] == 16384 * (16 * 331 + 8 * 177 + 8 * 24) == 113_115_136
    # pdrop-192: 576, 288, 144, 72 over 3, 7, 11, 11 layers
    assert pdrop["kv_cache_bytes"] == 16384 * (3 * 600 + 7 * 312 + 11 * 168 + 11 * 96)
    assert pdrop["avg_visual_tokens"] == 191.25 and duet["avg_visual_tokens"] == 191.75
    assert all(r["measured"] is None for r in doc["rows"])
    # the table shows the same numbers
    tokens, flops = tables(invoke([*args, "--text-tokens", "24"]).stdout)
    assert tokens["duet-192"][3] == fmt_mib(113_115_136) == "107.88"
    assert flops["baseline"][3] == fmt_gflops(base["flops"]["prefill"]["actual"]) == "7,866"


def test_config_only_video_card_is_one_clip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "load_model", lambda *a, **k: pytest.fail("--config-only loaded a model"))
    args = ["profile", "--config-only", "-m", "video-llava-7b", "-p", "video-duet-960", "--json"]
    doc = json.loads(invoke(args).stdout)["numbers"]
    assert doc["frames"] == 8
    base, duet = doc["rows"]
    # 8 frames x 257 tokens (video frames keep CLS); video-duet-960: 8 x (160 + 32) = 1536 in
    assert (base["tokens_in"], base["unreduced"], duet["tokens_in"]) == (2056, 2056, 1536)
    assert duet["ledger"] == [1536] * 16 + [768] * 8 + [0] * 8 and duet["avg_visual_tokens"] == 960
    # KV cache in bf16, 16384 bytes per token per layer, 24 text tokens per layer
    assert duet["kv_cache_bytes"] == 16384 * (16 * 1560 + 8 * 792 + 8 * 24) == 515_899_392
    arch = Architecture.from_card(get_card("video-llava-7b").architecture, "video_llava")
    assert base["flops"]["prefill"]["actual"] == prefill_flops(arch.text, [2056] * 32, 24).actual


def test_text_tokens_needs_config_only() -> None:
    result = CliRunner(env=ENV).invoke(cli.app, ["profile", "--text-tokens", "5"])
    assert isinstance(result.exception, UsageError)


# ---------------------------------------------------------------------------------------------------------
# Qwen2.5-VL: every image has its own patch grid


@pytest.fixture(scope="module")
def qwen_measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, dict[str, Any]]:
    """A tiny Qwen2.5-VL folder (tests/tiny_qwen.py) profiled on examples/shapes.png with qwen-duet-640 and
    a budget-relative stage 1 given as a YAML file (half of each image's tokens dominant, an eighth
    contextual)."""
    from tiny_qwen import save_tiny_qwen

    folder = save_tiny_qwen(str(tmp_path_factory.mktemp("tiny-qwen")))
    relative = tmp_path_factory.mktemp("profiles") / "relative.yaml"
    relative.write_text(
        "name: relative-test\n"
        "vision: {method: visionzip, dominant_fraction: 0.5, contextual_fraction: 0.125, "
        "contextual_mode: pooled, cluster_width: 4}\n"
    )
    args = [*MEASURED, "-m", folder, "--profile", "qwen-duet-640", "--profile", str(relative)]
    return (folder, *measured_run(args))


def test_measured_qwen_uses_the_image_grid(qwen_measured: tuple[str, str, dict[str, Any]]) -> None:
    folder, text, doc = qwen_measured
    numbers = doc["numbers"]
    assert numbers["model"] == folder and numbers["config_only"] is False
    # shapes.png is 336 px square; the tiny processor's max_pixels 28^2 * 64 resizes it to 224 px:
    # 16 x 16 patches of 14 px, 8 x 8 = 64 merged tokens (not the 896 px reference image's 1024)
    assert numbers["image_grid"] == {"t": 1, "h": 16, "w": 16, "source": "image"}
    assert "image 16x16 patches" in " ".join(ANSI.sub("", text).split())  # the title may wrap
    base, duet, relative = numbers["rows"]
    assert [r["profile"] for r in numbers["rows"]] == ["baseline", "qwen-duet-640", "relative-test"]
    assert all(r["unreduced"] == 64 for r in numbers["rows"]) and base["tokens_in"] == 64
    # a profile given as a YAML path is recorded under its name
    assert set(doc["provenance"]["profile"]) == {"baseline", "qwen-duet-640", "relative-test"}
    # stage 1 clamped to the image: d = min(540, 63) = 63, c = min(100, 1) = 1; stage 2 after 4 and 6 of
    # 8 layers keeps floor(64/2) = 32 and floor(64/4) = 16
    assert base["ledger"] == [64] * 8
    assert duet["tokens_in"] == 64 and duet["ledger"] == [64] * 4 + [32] * 2 + [16] * 2
    assert duet["avg_visual_tokens"] == 44.0
    # vision, tiny tower (hidden 32, 2 heads, SwiGLU 64, 4 blocks, block 2 full, windows of 4 x 4
    # patches, merger 128 -> 128 -> 64) on 256 patches = 16 windows of 16:
    #   patch embedding 2 * 256 * 1176 * 32 = 19,267,584
    #   per block qkv + proj 8 * 256 * 32^2 = 2,097,152, SwiGLU 6 * 256 * 32 * 64 = 3,145,728
    #   attention windowed 4 * 32 * 16 * 16^2 = 524,288, full 4 * 32 * 256^2 = 8,388,608
    #   merger 64 * (2 * 128^2 + 2 * 128 * 64) = 3,145,728
    encoder = 4 * (2_097_152 + 3_145_728) + 3 * 524_288 + 8_388_608
    assert base["flops"]["vision"]["actual"] == 19_267_584 + encoder + 3_145_728 == 53_346_304
    # paper per span n: 4n*32^2 + 2n^2*32 + 2n*32*64 = 8192n + 64n^2; windowed block 16 spans of 16:
    # 2,359,296; full block one span of 256: 6,291,456
    assert base["flops"]["vision"]["paper"] == duet["flops"]["vision"]["paper"] == 3 * 2_359_296 + 6_291_456
    # stage 1: qkv recomputed 2 * 256 * 32 * 96 = 1,572,864, scores 2 * 32 * 256^2 = 4,194,304; the one
    # contextual token has no members left to merge (pool min(4, 1) = its target)
    assert duet["flops"]["overhead"]["stage1_scoring"] == 1_572_864 + 4_194_304
    assert duet["flops"]["vision"]["actual"] == 53_346_304 + 5_767_168
    # relative: d = floor(64 / 2) = 32, c = floor(64 / 8) = 8 -> 40 tokens, no stage 2; the pool of
    # min(4 * 8, 32) = 32 leftovers has 24 members: 2 * 24 * 8 * (head_dim 16 + out_hidden 64) = 30,720
    assert relative["tokens_in"] == 40 and relative["ledger"] == [40] * 8
    assert relative["flops"]["overhead"]["stage1_scoring"] == 5_767_168 + 30_720
    # KV cache in fp32: 2 * 2 kv heads * 16 head_dim * 4 bytes = 256 bytes per token per layer
    t = numbers["text_tokens"]
    assert 10 < t < 60 and numbers["kv_bytes_per_element"] == 4
    assert base["kv_cache_bytes"] == 256 * 8 * (64 + t)
    assert duet["kv_cache_bytes"] == 256 * (4 * (64 + t) + 2 * (32 + t) + 2 * (16 + t))
    from tiny_qwen import tiny_qwen_config

    text_arch = Architecture.from_config(tiny_qwen_config()).text
    assert base["flops"]["prefill"]["actual"] == prefill_flops(text_arch, [64] * 8, t).actual
    assert base["bound"] == 1.0 and duet["bound"] > 1.0


def test_measured_qwen_json_equals_tables(qwen_measured: tuple[str, str, dict[str, Any]]) -> None:
    _, text, doc = qwen_measured
    ledger = assert_tables_equal_json(text, doc)
    assert ledger == {"1-4": ["64", "64", "40"], "5-6": ["64", "32", "40"], "7-8": ["64", "16", "40"]}


def test_config_only_qwen_7b_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "load_model", lambda *a, **k: pytest.fail("--config-only loaded a model"))
    args = ["profile", "--config-only", "-m", "qwen2.5-vl-7b", "-p", "qwen-duet-640"]
    numbers = json.loads(invoke([*args, "--json"]).stdout)["numbers"]
    # the reference image of duet_cli.dims: 896 px square, 64 x 64 patches, 1024 merged tokens
    assert numbers["image_grid"] == {"t": 1, "h": 64, "w": 64, "source": "reference"}
    base, duet = numbers["rows"]
    assert (base["tokens_in"], base["unreduced"], duet["tokens_in"], duet["unreduced"]) == (
        1024,
        1024,
        640,
        1024,
    )
    # drops after round(0.5 * 28) = 14 and round(0.75 * 28) = 21 layers keep 320 and 160
    assert duet["ledger"] == [640] * 14 + [320] * 7 + [160] * 7 and duet["avg_visual_tokens"] == 440
    # vision, by hand in tests/test_flops.py (test_qwen_7b_vision_by_hand)
    assert base["flops"]["vision"] == {"paper": 2_197_144_207_360, "actual": 5_645_449_297_920}
    assert duet["flops"]["overhead"]["stage1_scoring"] == 83_434_831_360
    assert duet["flops"]["vision"] == {
        "paper": 2_197_144_207_360,
        "actual": 5_645_449_297_920 + 83_434_831_360,
    }
    # stage 2 ranks with the 24 tokens after the image (all assumed text tokens): q 2 * 24 * 3584^2 =
    # 616,562,688, k 2 * n * 3584 * 512 (4 kv heads of 128), scores 2 * 28 * 128 * 24 * n, with n = 24 + 640
    # tokens at the first drop and 24 + 320 at the second
    first = 616_562_688 + 2_436_890_624 + 114_229_248
    second = 616_562_688 + 1_262_485_504 + 59_179_008
    assert duet["flops"]["overhead"]["stage2_ranking"] == first + second == 5_105_909_760
    text_arch = Architecture.from_card(get_card("qwen2.5-vl-7b").architecture, "qwen2_5_vl").text
    no_ranking = prefill_flops(text_arch, duet["ledger"], 24)
    assert duet["flops"]["prefill"] == {
        "paper": no_ranking.paper,
        "actual": no_ranking.actual + first + second,
    }
    # KV cache in bf16: 2 * 4 kv heads * 128 * 2 bytes = 2048 bytes per token per layer
    assert base["kv_cache_bytes"] == 2048 * 28 * 1048 == 60_096_512
    assert duet["kv_cache_bytes"] == 2048 * (14 * 664 + 7 * 344 + 7 * 184) == 26_607_616
    # the tables show the same numbers, for the reference image
    text = invoke(args).stdout
    assert "reference image 64x64 patches" in " ".join(ANSI.sub("", text).split())
    tokens, flops = tables(text)
    assert tokens["qwen-duet-640"][:4] == ["640", "1024", "440.00", fmt_mib(26_607_616)]
    assert (
        flops["baseline"][:2]
        == [fmt_gflops(2_197_144_207_360), fmt_gflops(5_645_449_297_920)]
        == ["2,197", "5,645"]
    )
