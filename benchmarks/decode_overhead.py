"""Decode-step overhead of every shipped LLaVA profile against stock `generate()` on a 32-layer model.

On a GPU the decode loop at batch 1 is bound by the host (Python calls per step), not by FLOPs, so the
headline is deterministic: Python calls per generated token (cProfile, prefill cancelled out by
differencing a long and a short run), and host synchronisations per decode step reached from duet's own
code (`.item()`, `.tolist()`, `.cpu()`, `nonzero`, boolean tests of tensors). The model is LLaVA-1.5's
32-layer depth at tiny widths (compute ~0, so the calls are what is left); ms per token on this CPU are
reported as ratios to stock, measured interleaved in one run (absolute times mean little here).

    python benchmarks/decode_overhead.py                 # every shipped LLaVA profile
    python benchmarks/decode_overhead.py --json out.json --repeats 5
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from duet_cli.engine.session import apply_profile  # noqa: E402
from duet_cli.profiles import list_profiles, resolve_profile  # noqa: E402

PACKAGE = str(ROOT / "duet_cli")
SYNCING = {"item", "tolist", "cpu", "nonzero", "__bool__", "__int__", "__float__", "__index__", "numpy"}
IMAGE_ID, DEPTH, SHORT, LONG = 127, 32, 4, 12


def build_model() -> LlavaForConditionalGeneration:
    vision = CLIPVisionConfig(
        image_size=336, patch_size=14, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4,
    )  # fmt: skip
    text = LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=DEPTH, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=IMAGE_ID, vision_feature_layer=-2,
        vision_feature_select_strategy="default", tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = None
    return model


def inputs_for(tokens: int) -> dict[str, torch.Tensor]:
    ids = [1, 5, 6, 7, *([IMAGE_ID] * tokens), 20, 21, 22, 23]
    torch.manual_seed(1)
    return {
        "input_ids": torch.tensor([ids]),
        "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
        "pixel_values": torch.randn(1, 3, 336, 336),
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
        self.model, self.name, self.inputs = model, name, inputs_for(tokens)

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
            generate(self.model, self.inputs, steps)
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
            t0 = time.perf_counter()
            generate(self.model, self.inputs, steps)
            return time.perf_counter() - t0

        return self.run(lambda: (timed(LONG) - timed(SHORT)) / (LONG - SHORT))


def llava_profiles(model: Any) -> list[tuple[str, int]]:
    """Shipped profiles that run on LLaVA-1.5 (no qwen-/video- ones), with the tokens entering the LLM."""
    from duet_cli.dims import dims_from_config

    dims = dims_from_config(model.config)
    out = []
    for profile in list_profiles():
        if profile.name.startswith(("qwen-", "video-")):
            continue
        out.append((profile.name, int(resolve_profile(profile, dims).tokens_per_image(dims))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds (median)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = build_model()
    arms = [Arm(model, None, 576)] + [Arm(model, name, n) for name, n in llava_profiles(model)]
    print(f"{len(arms)} arms on a {DEPTH}-layer LLaVA (tiny widths), tokens {SHORT} vs {LONG}", flush=True)
    rows: dict[str, dict[str, float]] = {}
    for i, arm in enumerate(arms, 1):
        label = arm.name or "stock generate()"
        rows[label] = {"calls_per_token": arm.calls_per_token(), "syncs_per_step": arm.syncs_per_step()}
        print(f"  [{i}/{len(arms)}] counted {label}", flush=True)
    times: dict[str, list[float]] = {label: [] for label in rows}
    for r in range(args.repeats):  # interleaved: every arm once per round, so drift hits all alike
        for arm in arms:
            times[arm.name or "stock generate()"].append(arm.seconds_per_token())
        print(f"  timing round {r + 1}/{args.repeats}", flush=True)
    stock = rows["stock generate()"]["calls_per_token"]
    stock_s = statistics.median(times["stock generate()"])
    print(
        f"\n{'profile':18} {'calls/token':>12} {'vs stock':>9} {'syncs/step':>11} {'ms/token vs stock':>18}"
    )
    for label, row in rows.items():
        row["calls_vs_stock"] = row["calls_per_token"] / stock - 1
        row["time_ratio"] = statistics.median(times[label]) / stock_s
        print(
            f"{label:18} {row['calls_per_token']:12.0f} {row['calls_vs_stock']:+9.1%} "
            f"{row['syncs_per_step']:11.0f} {row['time_ratio']:17.2f}x"
        )
    if args.json is not None:
        import transformers

        doc = {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "depth": DEPTH,
            "repeats": args.repeats,
            "rows": rows,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
