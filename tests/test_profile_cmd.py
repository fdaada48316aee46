"""`duet profile`: the measured path on the bundled tiny-llava, --json equal to the tables, and --config-only
on the llava-1.5-7b card offline with no weights (FLOPs equal flops.py, KV bytes equal the ledger by hand).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from typer.testing import CliRunner

from duet_cli import cli, profiling, runtime
from duet_cli.catalog import get_card
from duet_cli.errors import UsageError
from duet_cli.flops import Architecture, decode_step_flops, prefill_flops
from duet_cli.render_profile import fmt_gflops, fmt_mib, fmt_ms, fmt_ratio

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


@pytest.fixture(scope="module")
def measured(monkeypatch_module: pytest.MonkeyPatch) -> tuple[str, dict[str, Any]]:
    """One real measured run (table output), then the same report printed as --json."""
    captured: list[profiling.ProfileReport] = []
    real = profiling.profile_measured

    def capture(*args: Any, **kwargs: Any) -> profiling.ProfileReport:
        captured.append(real(*args, **kwargs))
        return captured[-1]

    monkeypatch_module.setattr(profiling, "profile_measured", capture)
    table_text = invoke([*MEASURED, "--profile", "duet-192", "--layers"]).stdout
    monkeypatch_module.setattr(profiling, "profile_measured", lambda *a, **k: captured[0])
    doc = json.loads(invoke([*MEASURED, "--profile", "duet-192", "--json"]).stdout)
    return table_text, doc


@pytest.fixture(scope="module")
def monkeypatch_module() -> Any:
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


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
    arch = Architecture.from_card(get_card("tiny-llava").architecture)
    t = numbers["text_tokens"]
    assert 10 < t < 40 and numbers["kv_bytes_per_element"] == 4
    assert duet["kv_cache_bytes"] == 512 * (4 * (307 + t) + 2 * (153 + t) + 2 * t)
    assert base["kv_cache_bytes"] == 512 * 8 * (576 + t)
    assert base["flops"]["prefill"]["actual"] == prefill_flops(arch.text, [576] * 8, t).actual
    assert base["flops"]["decode_step"]["actual"] == decode_step_flops(arch.text, [576 + t] * 8).actual
    assert base["bound"] == 1.0 and duet["bound"] > 1.0


def test_json_equals_tables(measured: tuple[str, dict[str, Any]]) -> None:
    text, doc = measured
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
    arch = Architecture.from_card(get_card("llava-1.5-7b").architecture)
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
    arch = Architecture.from_card(get_card("video-llava-7b").architecture)
    assert base["flops"]["prefill"]["actual"] == prefill_flops(arch.text, [2056] * 32, 24).actual


def test_text_tokens_needs_config_only() -> None:
    result = CliRunner(env=ENV).invoke(cli.app, ["profile", "--text-tokens", "5"])
    assert isinstance(result.exception, UsageError)
