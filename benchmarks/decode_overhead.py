"""Decode-step overhead of every shipped LLaVA profile against stock `generate()` on a 32-layer model.

On a GPU the decode loop at batch 1 is bound by the host (Python calls per step), not by FLOPs, so the
headline is deterministic: Python calls per generated token (cProfile, prefill cancelled out by
differencing a long and a short run), and host synchronisations per decode step reached from duet's own
code (`.item()`, `.tolist()`, `.cpu()`, `nonzero`, boolean tests of tensors). The model is LLaVA-1.5's
32-layer depth at tiny widths (compute ~0, so the calls are what is left); ms per token on this CPU are
reported as ratios to stock, measured interleaved in one run (absolute times mean little here).

    python benchmarks/decode_overhead.py                 # every shipped LLaVA profile
    python benchmarks/decode_overhead.py --json out.json --repeats 5
    python benchmarks/decode_overhead.py --device cuda --profiles baseline duet-192 duet-64

The widths are tiny, so there is no dtype to choose (float32; benchmarks/gpu_check.py runs `measure`
in its own dtype on the GPU); on the CPU it runs on one thread. A status line follows every arm counted
and every timing round; about 2 minutes for every shipped LLaVA profile with 3 rounds on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import Progress, sync  # noqa: E402

from duet_cli.engine.session import apply_profile  # noqa: E402
from duet_cli.profiles import list_profiles, resolve_profile  # noqa: E402

PACKAGE = str(ROOT / "duet_cli")
SYNCING = {"item", "tolist", "cpu", "nonzero", "__bool__", "__int__", "__float__", "__index__", "numpy"}
IMAGE_ID, DEPTH, SHORT, LONG = 127, 32, 4, 12
STOCK = "stock generate()"


def build_model(
    depth: int = DEPTH, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> LlavaForConditionalGeneration:
    vision = CLIPVisionConfig(
        image_size=336, patch_size=14, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4,
    )  # fmt: skip
    text = LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=depth, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    settings: dict[str, Any] = {"image_token_id": IMAGE_ID}  # transformers 5's keyword (stubs lag)
    config = LlavaConfig(
        vision_config=vision, text_config=text, vision_feature_layer=-2,
        vision_feature_select_strategy="default", tie_word_embeddings=False, **settings,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval().to(device=device, dtype=dtype)
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = None
    return model


def inputs_for(
    tokens: int, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    ids = [1, 5, 6, 7, *([IMAGE_ID] * tokens), 20, 21, 22, 23]
    torch.manual_seed(1)
    return {
        "input_ids": torch.tensor([ids], device=device),
        "attention_mask": torch.ones(1, len(ids), dtype=torch.long, device=device),
        "pixel_values": torch.randn(1, 3, 336, 336).to(device=device, dtype=dtype),
    }


class HostReads(TorchFunctionMode):
    """Syncing tensor calls made from duet_cli's own frames."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if getattr(func, "__name__", "") in SYNCING and sys._getframe(1).f_code.co_filename.startswith(
            PACKAGE
        ):
            self.count += 1
        return func(*args, **(kwargs or {}))


def generate(model: Any, inputs: dict[str, torch.Tensor], steps: int) -> None:
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)


class Arm:
    """Stock (`profile` None) or one profile: applied around each measurement, removed after."""

    def __init__(self, model: Any, name: str | None, tokens: int) -> None:
        self.model, self.name = model, name
        self.device = torch.device(model.device)
        self.inputs = inputs_for(tokens, str(self.device), model.dtype)

    @property
    def label(self) -> str:
        return self.name or STOCK

    def run(self, fn: Any) -> Any:
        if self.name is None:
            return fn()
        with apply_profile(self.model, self.name):
            return fn()

    def calls_per_token(self) -> float:
        def measure(steps: int) -> int:
            generate(self.model, self.inputs, steps)  # warm
            profiler = cProfile.Profile()
            profiler.enable()
            try:
                generate(self.model, self.inputs, steps)
            finally:
                profiler.disable()
            return int(pstats.Stats(profiler).total_calls)  # type: ignore[attr-defined]

        return self.run(lambda: (measure(LONG) - measure(SHORT)) / (LONG - SHORT))

    def syncs_per_step(self) -> float:
        def measure(steps: int) -> int:
            with HostReads() as reads:
                generate(self.model, self.inputs, steps)
            return reads.count

        return self.run(lambda: (measure(LONG) - measure(SHORT)) / (LONG - SHORT))

    def seconds_per_token(self) -> float:
        def timed(steps: int) -> float:
            sync(self.device)
            t0 = time.perf_counter()
            generate(self.model, self.inputs, steps)
            sync(self.device)
            return time.perf_counter() - t0

        return self.run(lambda: (timed(LONG) - timed(SHORT)) / (LONG - SHORT))


def llava_profiles(model: Any, only: list[str] | None = None) -> list[tuple[str, int]]:
    """Shipped profiles that run on LLaVA-1.5 (no qwen-/video- ones), or the `only` ones, with the
    tokens entering the LLM."""
    from duet_cli.dims import dims_from_config
    from duet_cli.profiles import load_profile

    dims = dims_from_config(model.config)
    if only is not None:
        profiles = [load_profile(name) for name in only]
    else:
        profiles = [p for p in list_profiles() if not p.name.startswith(("qwen-", "video-"))]
    return [(p.name, int(resolve_profile(p, dims).tokens_per_image(dims))) for p in profiles]


def measure(
    model: Any,
    profiles: list[str] | None = None,
    repeats: int = 3,
    say: Callable[[str], None] = print,
    budget_s: float | None = None,
) -> dict[str, Any]:
    """Calls per token and syncs per step of stock generate() and each profile, then ms per token as
    ratios to stock over `repeats` interleaved rounds (no round starts that would end past `budget_s`,
    counted from the call; the first always runs)."""
    started = time.perf_counter()
    arms = [Arm(model, None, 576)] + [Arm(model, name, n) for name, n in llava_profiles(model, profiles)]
    depth = model.config.text_config.num_hidden_layers
    say(
        f"{len(arms)} arms on a {depth}-layer LLaVA (tiny widths) on {model.device}, tokens {SHORT} vs {LONG}"
    )
    rows: dict[str, dict[str, float]] = {}
    for i, arm in enumerate(arms, 1):
        rows[arm.label] = {"calls_per_token": arm.calls_per_token(), "syncs_per_step": arm.syncs_per_step()}
        say(f"  [{i}/{len(arms)}] counted {arm.label}")
    times: dict[str, list[float]] = {label: [] for label in rows}
    stopped = None
    last = 0.0
    for r in range(repeats):  # interleaved: every arm once per round, so drift hits all alike
        spent = time.perf_counter() - started
        if r and budget_s is not None and spent + last > budget_s:
            stopped = f"time budget {budget_s:.0f}s: stopped after {r} timing rounds"
            say(stopped)
            break
        t0 = time.perf_counter()
        for arm in arms:
            times[arm.label].append(arm.seconds_per_token())
        last = time.perf_counter() - t0
        say(f"  timing round {r + 1}/{repeats}: {last:.1f}s")
    stock = rows[STOCK]["calls_per_token"]
    stock_s = statistics.median(times[STOCK])
    for label, row in rows.items():
        row["calls_vs_stock"] = row["calls_per_token"] / stock - 1
        row["time_ratio"] = statistics.median(times[label]) / stock_s
        row["ms_per_token"] = statistics.median(times[label]) * 1000.0
    return {
        "depth": depth,
        "device": str(model.device),
        "dtype": str(model.dtype).removeprefix("torch."),
        "repeats": len(times[STOCK]),
        "repeats_asked": repeats,
        "stopped_early": stopped,
        "rows": rows,
    }


def render(result: dict[str, Any]) -> None:
    print(
        f"\n{'profile':18} {'calls/token':>12} {'vs stock':>9} {'syncs/step':>11} {'ms/token vs stock':>18}"
    )
    for label, row in result["rows"].items():
        print(
            f"{label:18} {row['calls_per_token']:12.0f} {row['calls_vs_stock']:+9.1%} "
            f"{row['syncs_per_step']:11.0f} {row['time_ratio']:17.2f}x"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds (median)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--profiles", nargs="+", help="these profiles only (default: every LLaVA one)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("decode_overhead.py: error: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 1
    if args.device == "cpu":
        torch.set_num_threads(1)  # compute is ~0: one thread times the host's work, not thread hand-offs
    say = Progress()
    say(f"torch threads {torch.get_num_threads()}; float32 (the widths are tiny: no dtype to choose)")
    model = build_model(device=args.device)
    result = measure(model, args.profiles, args.repeats, say)
    render(result)
    if args.json is not None:
        import transformers

        doc = {"torch": torch.__version__, "transformers": transformers.__version__} | result
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
