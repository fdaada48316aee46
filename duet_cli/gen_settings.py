"""Generation settings (seed, sampling, beams x batch) checked before a model loads or generates.

Each bad value is refused in one line naming the option, rather than failing deep inside torch or
transformers (an overflowing seed, a zero temperature) or exhausting memory (100,000 beams).
"""

from __future__ import annotations

import math

from duet_cli.errors import UsageError

SEED_MAX = 2**32 - 1  # numpy's bound, well inside torch.manual_seed's 64 bits (training adds to it)
# sequences decoded at once (prompts per batch x beams): each holds its own KV cache, and far more
# than this exhausts memory on any machine before it finishes; the fixed cap refuses such runs up front
MAX_ROWS = 1024


def check_seed(seed: int) -> int:
    if not 0 <= seed <= SEED_MAX:
        raise UsageError(f"--seed {seed}: choose an integer from 0 to {SEED_MAX}")
    return seed


def check_rows(batch: int, num_beams: int, *, what: str = "--batch-size") -> None:
    """Refuse batch x beams beyond MAX_ROWS (and non-positive values) in one line."""
    if batch < 1:
        raise UsageError(f"{what} must be at least 1, got {batch}")
    if num_beams < 1:
        raise UsageError(f"--num-beams must be at least 1, got {num_beams}")
    if batch * num_beams > MAX_ROWS:
        shown = f"{what} {batch} x --num-beams {num_beams}" if num_beams > 1 else f"{what} {batch}"
        raise UsageError(
            f"{shown} = {batch * num_beams:,} sequences decoded at once, over duet's limit of {MAX_ROWS:,} "
            "(each holds its own KV cache): lower it"
        )


def check_sampling(do_sample: bool, temperature: float, top_p: float) -> None:
    """Sampling needs a finite temperature > 0 and 0 < top-p <= 1 (greedy decoding ignores both)."""
    if not math.isfinite(temperature) or temperature < 0:
        raise UsageError(f"--temperature {temperature}: give a finite number > 0")
    if not math.isfinite(top_p) or not 0 <= top_p <= 1:
        raise UsageError(f"--top-p {top_p}: give a number from 0 to 1")
    if do_sample and temperature <= 0:
        raise UsageError(
            f"--temperature {temperature}: sampling (--sample) needs a temperature > 0; "
            "for greedy decoding, drop --sample"
        )
    if do_sample and top_p <= 0:
        raise UsageError(f"--top-p {top_p}: sampling (--sample) needs a top-p > 0 (1 keeps every token)")


def check_generation(
    *, batch: int, num_beams: int = 1, do_sample: bool = False, temperature: float = 1.0,
    top_p: float = 1.0, seed: int = 0, max_new_tokens: int = 1,
) -> None:  # fmt: skip
    """Every generation setting at once (the CLI before loading; `runtime.run` before generating)."""
    if max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    check_seed(seed)
    check_rows(batch, num_beams)
    check_sampling(do_sample, temperature, top_p)
