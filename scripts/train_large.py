"""Recipe for the bundled offline model on `synth-large` (issue 17): tower, gate, decoder, export.

Fixed seed, resumable (rerun the same command: every stage skips what it finished and continues an
interrupted one from its last checkpoint), offline, one command:

    HF_HUB_OFFLINE=1 python scripts/train_large.py --work runs/large [--device cuda]

Stages:
  1. tokenizer  the bundled tokenizer's recipe (scripts/train_bundled.py): byte-level BPE on synth
                prompts and answers, 490 tokens (synth-large has the same words).
  2. tower      CLIP ViT 336/14, hidden 192, 6 layers, 6 heads, MLP 768, trained on synth-large train
                scenes with dense per-patch targets, the neighbour objective and the CLS-attention
                objective (scripts/large_tower.py), from the local-attention initialisation; 900 steps
                of batch 16, AdamW 1e-3 (weight decay 0.05), 5% warm-up then cosine.
  3. probe      per-patch shape and glyph accuracy on object patches and CLS attention mass on object
                patches, synth-large val (250 scenes); the recipe stops here unless shape >= 95%,
                glyph >= 90% and CLS mass >= 0.9. Written to WORK/tower/probe.json.
  4. assemble   LlavaForConditionalGeneration: that tower, a random 2-layer GELU projector and a random
                Llama decoder (hidden 256, MLP 688, 8 layers, GQA 4/2; text embeddings at unit scale, as in
                scripts/train_bundled.py's `assemble`), float32.
  5. decoder    projector + decoder (tower frozen) in `duet train` phases (the library entry point)
                on `bundled_data`'s dense conversations of synth-large train scenes: each image is one
                sequence of ~15 turns (colours present, shapes present, a left-to-right caption, six
                simpler questions and the image's six synth-large questions), answer-only loss, batch 8.
                The phases cycle visionzip-64 / duet-64, duet-192 and baseline (`DECODER_PHASES`), so
                the model answers at every budget; the learning rate steps down from phase to phase and
                the last phase of each budget decays to 0.
  6. export     WORK/model: the final model in bfloat16.

Status (issue 17, open): stages 1-3 run and stage 3 stops the recipe, because no tower trained here
meets the gate yet; stages 4-6 run end to end in `--smoke` (every phase and the export, about 2.5
minutes), and have not been run at full length. Measured on this 2-core CPU, probe on the 250 val
scenes (per-patch accuracy on object patches; `glyph_on_carriers` counts only glyph carriers' patches):

  run                                                   minutes  shape  glyph  carriers  colour  CLS
  A  batch 32, losses on every patch, stock init, no       15     42.4   40.6     0.6    93.6   1.00
     neighbour objective; probe at step 150 (50 scenes),
     stopped at 260 with the shape loss flat
  B  900 x 16, losses on object patches, neighbour         21     62.5   45.8     8.1    99.3   1.00
     objective, 2-D sin-cos positions (--tower-init sincos)
  C  as B, from the local-attention init (the default)     25     64.7   48.5    12.8    99.1   1.00
  D  as C, the local heads' value/output set to pass the   18     54.7   51.6    17.7    99.4   1.00
     neighbour on (--tower-init local-values)

So the CLS objective is met at once and colour, the object count (99.6%) and the left-to-right rank
(86%) are learned, but shape and glyph climb about 3 points per 100 steps and the gate (95 / 90) is
out of reach at CPU budgets. What limits it is locality, not the data: a 3-layer CNN over the same
14-px patch embeddings (3 x 3 convolutions on the patch grid) learns per-patch shape to 95% in 150
steps of batch 16 (25 s) and 99% by 175, where the same head on patch-local features alone stays at
the class prior; the ViT has to learn to look at its neighbours first. Glyphs are harder still: the
same CNN, deeper, had not learned the glyph of a carrier's patches after 275 steps (loss 3.0, chance
3.5). Next: far more tower steps (on a GPU: `--device cuda --workers 8 --tower-steps 20000`), then
the decoder.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from large_tower import GATE, TowerTrainer, gate_met, probe, scene_batch  # noqa: E402
from train_bundled import assemble, atomic_torch_save, build_tokenizer, cosine, export  # noqa: E402

SEED = 0
VISION: dict[str, Any] = dict(
    image_size=336, patch_size=14, hidden_size=192, intermediate_size=768, num_hidden_layers=6,
    num_attention_heads=6, hidden_act="quick_gelu",
)  # fmt: skip
PLAN = {"tower_steps": 900, "tower_batch": 16, "tower_lr": 1e-3, "tower_init": "local"}
SMOKE = {"tower_steps": 4, "tower_batch": 8, "tower_lr": 1e-3, "tower_init": "local"}
TRAIN_SCENES = 50_000
TEXT: dict[str, Any] = dict(
    hidden_size=256, intermediate_size=688, num_hidden_layers=8, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=2048, rms_norm_eps=1e-5,
)  # fmt: skip
# (name, profile, steps, lr, schedule, lists_first): visionzip-64 first (64 object tokens: the decoder
# finds the image fastest there, see scripts/train_bundled.py), then every budget in turn.
DECODER_PHASES: list[tuple[str, str, int, float, str, bool]] = [
    ("d1", "visionzip-64", 400, 1e-3, "constant", True),
    ("d2", "duet-192", 250, 1e-3, "constant", False),
    ("d3", "baseline", 100, 1e-3, "constant", False),
    ("d4", "visionzip-64", 400, 8e-4, "constant", False),
    ("d5", "duet-64", 300, 8e-4, "constant", False),
    ("d6", "duet-192", 250, 6e-4, "constant", False),
    ("d7", "baseline", 100, 5e-4, "constant", False),
    ("d8", "duet-64", 200, 4e-4, "cosine", False),
    ("d9", "duet-192", 150, 3e-4, "cosine", False),
    ("d10", "baseline", 80, 2e-4, "cosine", False),
]


def log_line(work: Path, row: dict[str, Any]) -> None:
    print(json.dumps(row), flush=True)
    with contextlib.suppress(OSError), (work / "log.jsonl").open("a") as fh:
        fh.write(json.dumps(row) + "\n")


class SceneStream(torch.utils.data.Dataset):
    """Batch `step` of the tower's fixed stream of synth-large train scenes, for steps start..steps-1."""

    def __init__(self, start: int, steps: int, batch: int) -> None:
        self.start, self.steps, self.batch = start, steps, batch

    def __len__(self) -> int:
        return self.steps - self.start

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        step = self.start + i
        return scene_batch("train", [(step * self.batch + j) % TRAIN_SCENES for j in range(self.batch)])


def train_tower(
    work: Path, plan: dict[str, Any], device: str, save_every: int, workers: int = 0
) -> TowerTrainer:
    out = work / "tower"
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.pt"
    steps, batch = plan["tower_steps"], plan["tower_batch"]
    torch.manual_seed(SEED)
    random.seed(SEED)
    model = TowerTrainer(VISION, init=plan["tower_init"]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=plan["tower_lr"], weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine(s, steps))
    start = 0
    if ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start = int(state["step"])
    if start >= steps:
        return model
    model.train()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else contextlib.nullcontext()
    t0 = time.perf_counter()
    batches = torch.utils.data.DataLoader(
        SceneStream(start, steps, batch),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
    )  # scene rendering and targets off the training thread (--workers; a GPU step outruns one CPU)
    for step, cpu_batch in zip(range(start, steps), batches):
        b = {k: v.to(device, non_blocking=True) for k, v in cpu_batch.items()}
        with autocast:
            loss, stats = model(b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        done = step + 1
        if done % 20 == 0 or done == steps:
            rate = (time.perf_counter() - t0) / (done - start)
            log_line(work, {"stage": "tower", "step": done, "s_per_step": round(rate, 2), **stats})
        if done % save_every == 0 or done == steps:
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": done}
            atomic_torch_save(state | {"scheduler": sched.state_dict()}, ckpt)
        if done % 100 == 0 and done < steps:
            log_line(work, {"stage": "tower-probe", "step": done, **probe(model, images=50)})
    return model


def save_tower(work: Path, model: TowerTrainer) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.tower.state_dict().items()}
    save_file(state, str(work / "tower" / "tower.safetensors"))


def train_decoder(work: Path, device: str, smoke: bool, save_every: int) -> Path:
    """Each phase continues from the previous phase's model; returns the last phase's model folder."""
    from bundled_data import DenseSource

    from duet_cli.benchmarks.synth import LARGE
    from duet_cli.training.plan import TrainConfig
    from duet_cli.training.trainer import Hooks, StepInfo, train

    def show(info: StepInfo) -> None:
        if info.step % 20 == 0 or info.step == info.total:
            log_line(work, {"stage": "decoder", "step": info.step, "loss": info.loss, "lr": info.lr})

    model = work / "init"
    for k, (name, profile, steps, lr, schedule, lists_first) in enumerate(DECODER_PHASES):
        out = work / name
        steps = 2 if smoke else steps
        if not (out / "done.json").is_file():  # written when the phase's run completes
            cfg = TrainConfig(
                data="synth-large-dense", out=out, model=str(model), profile=profile, max_steps=steps,
                lr=lr, schedule=schedule, warmup_steps=0 if smoke or k else 30, weight_decay=0.0,
                batch_size=8, train=("projector", "llm"), seed=k, resume=True, save_every=save_every,
                keep=1, device=device, mixed_precision="bf16" if device == "cuda" else "no",
            )  # fmt: skip
            print(f"{name}: {steps} steps with {profile} from {model}", flush=True)
            source = DenseSource(lists_first=lists_first, name="synth-large-dense", variant=LARGE)
            report = train(cfg, Hooks(step=show), source=source)
            assert report is not None
            rate = report.wall_s / max(1, report.steps - report.resumed_from_step)
            log_line(work, {"stage": "phase", "name": name, "profile": profile, "s_per_step": round(rate, 2)})
            (out / "done.json").write_text(json.dumps({"steps": report.steps, "wall_s": report.wall_s}))
        model = out / "model"
    return model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "large")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--smoke", action="store_true", help="a few steps of every stage")
    parser.add_argument("--save-every", type=int, default=50)
    parser.add_argument("--tower-steps", type=int)
    parser.add_argument("--workers", type=int, default=0, help="scene-rendering processes (GPU: several)")
    parser.add_argument(
        "--tower-init", choices=("sincos", "local", "local-values"), help="tower initialisation (large_tower)"
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda, but torch sees no CUDA device")
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    plan = dict(SMOKE if args.smoke else PLAN)
    if args.tower_steps:
        plan["tower_steps"] = args.tower_steps
    if args.tower_init:
        plan["tower_init"] = args.tower_init
    t0 = time.perf_counter()
    if not (work / "tokenizer").is_dir():
        build_tokenizer(work / "tokenizer")
    probe_file = work / "tower" / "probe.json"
    if not probe_file.is_file():
        model = train_tower(work, plan, args.device, args.save_every, args.workers)
        save_tower(work, model)
        numbers = probe(model.cpu(), images=20 if args.smoke else 250)
        probe_file.write_text(json.dumps({"gate": GATE, "val": numbers, "met": gate_met(numbers)}, indent=1))
        log_line(work, {"stage": "probe", **numbers, "minutes": round((time.perf_counter() - t0) / 60, 1)})
    result = json.loads(probe_file.read_text())
    if not result["met"] and not args.smoke:
        sys.exit(f"error: the tower misses the gate {GATE}: {result['val']} ({probe_file})")
    if not (work / "init").is_dir():
        assemble(work, VISION, TEXT, work / "tower" / "tower.safetensors")
    export(work, train_decoder(work, args.device, args.smoke, args.save_every))
    log_line(work, {"stage": "done", "minutes": round((time.perf_counter() - t0) / 60, 1)})


if __name__ == "__main__":
    main()
