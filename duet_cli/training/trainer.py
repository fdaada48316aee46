"""The training loop: accelerate (CPU, one GPU, DDP/FSDP/DeepSpeed by accelerate config), profile active.

Loss normalisation: every optimizer step first counts its label tokens on every rank and micro-step
and all-reduces the sum N. Each micro-step backpropagates `loss_sum * world / N`; DDP averages
gradients over the `world` ranks, so the update follows `sum(token losses) / N` exactly, whatever
the split of the global batch across ranks and micro-steps (drops and answer lengths make per-rank
counts differ).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import torch
from torch import nn

from duet_cli.engine.training import IGNORE, reduced_loss
from duet_cli.errors import DuetError, InputError
from duet_cli.inputs.image_aspect import prepare_images
from duet_cli.training import checkpoint
from duet_cli.training.collate import Order, collate, encode
from duet_cli.training.plan import SCHEDULES, Plan, TrainConfig, check_resume, make_plan, settings

if TYPE_CHECKING:
    from duet_cli.training.data import Source


class TrainingDivergedError(DuetError):
    """The loss, the gradients or the weights stopped being finite: training stops before saving them."""


@dataclass
class StepInfo:
    step: int  # optimizer steps done
    total: int
    loss: float
    lr: float
    samples_per_s: float


@dataclass
class Hooks:
    start: Callable[[int, int], None] = lambda total, done: None
    step: Callable[[StepInfo], None] = lambda info: None
    warn: Callable[[str], None] = lambda text: None
    describe: Callable[[str], None] = lambda text: None


@dataclass
class TrainReport:
    model: str
    data: str
    profile: str
    steps: int
    total_steps: int
    resumed_from_step: int
    samples: int  # this invocation, all ranks
    wall_s: float  # this invocation's training loop
    samples_per_s: float
    avg_visual_tokens: float  # per sample per decoder layer, over the whole run
    unreduced_visual_tokens: float  # per sample (dynamic resolution: the mean over this run's samples)
    visual_tokens_in: float  # per sample, entering the LLM
    final_loss: float | None
    world_size: int
    global_batch: int
    trainable_parameters: int
    history: list[list[float]] = field(default_factory=list)  # [step, loss, lr]
    files: dict[str, str] = field(default_factory=dict)
    setup: dict[str, Any] = field(default_factory=dict)  # chat template and image aspect of the run


class LossModule(nn.Module):
    """Wraps the model so DDP/FSDP see one forward per micro-step: reduced_loss under the session."""

    def __init__(self, model: nn.Module, session: Any) -> None:
        super().__init__()
        self.model = model
        self.session = session

    def forward(self, **batch: torch.Tensor) -> dict[str, torch.Tensor]:
        self.session.recorder.reset()
        self.session.forget_selections()
        parts = reduced_loss(self.model, self.session, batch)
        dev = parts.loss_sum.device
        counts = [parts.tokens, parts.visual_tokens_in, parts.visual_token_layers]
        return {"loss_sum": parts.loss_sum, "counts": torch.tensor(counts, dtype=torch.float64, device=dev)}


def set_trainable(model: Any, adapter: Any, parts: tuple[str, ...]) -> int:
    """requires_grad by part: the adapter's projector (Qwen2.5-VL: the patch merger, although it sits
    inside the vision tower), the rest of every vision tower (Video-LLaVA has an image and a video tower),
    language model + lm_head; anything else (none in the supported families) counts as projector."""
    projector = {id(p) for p in adapter.projector(model).parameters()}
    towers = {id(tower): tower for m in adapter.modalities for tower in [adapter.vision_tower(model, m)]}
    vision = {id(p) for tower in towers.values() for p in tower.parameters()} - projector
    llm = {id(p) for p in adapter.language_model(model).parameters()}
    llm |= {id(p) for p in model.get_output_embeddings().parameters()}
    count = 0
    for p in model.parameters():
        part = "vision" if id(p) in vision else "llm" if id(p) in llm else "projector"
        p.requires_grad_(part in parts)
        count += p.numel() if part in parts else 0
    return count


def _accelerator(cfg: TrainConfig) -> Any:
    from accelerate import Accelerator, DistributedDataParallelKwargs

    if cfg.device == "cuda" and not torch.cuda.is_available():
        from duet_cli.errors import UsageError

        raise UsageError("--device cuda: CUDA is not available on this machine")
    ddp = DistributedDataParallelKwargs(find_unused_parameters="vision" in cfg.train)
    return Accelerator(cpu=cfg.device == "cpu", mixed_precision=cfg.mixed_precision, kwargs_handlers=[ddp])


def _optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _scheduler(optimizer: Any, cfg: TrainConfig, total: int) -> Any:
    from transformers import get_scheduler

    return get_scheduler(
        SCHEDULES[cfg.schedule], optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=total
    )


class Batches:
    """Micro-batches of one rank: encoded conversations, then pixels on demand.

    Fixed-geometry families (LLaVA) give every image the profile's `tokens_per_image` placeholders. A
    dynamic-resolution family (Qwen2.5-VL) sizes each image with its processor first: the image gets its
    own count (its merged tokens, or what stage 1 keeps of them), and the batch carries `image_grid_thw`
    and `mm_token_type_ids` (without the latter transformers silently falls back to 1-D positions)."""

    def __init__(self, plan: Plan, loaded: Any, session: Any, device: torch.device) -> None:
        self.source, self.loaded, self.session, self.device = plan.source, loaded, session, device
        self.dynamic = bool(session.dims.dynamic_resolution)
        self.image_id = loaded.adapter.image_token_id(loaded.model)
        tok = loaded.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.unreduced = [0, 0]  # dynamic: (stock merged tokens, samples) seen by this rank

    def encoded(self, indices: list[int]) -> tuple[list[Any], list[Any], dict[str, torch.Tensor] | None]:
        """The micro-batch's conversations, their token ids and labels, and (dynamic resolution) the
        processed images, which decided each image's placeholder count."""
        convs = [self.source[i] for i in indices]
        lm = self.loaded
        counts = [self.session.tokens_per_image] * len(convs)
        pixels = None
        if self.dynamic:
            merge = int(lm.model.config.vision_config.spatial_merge_size) ** 2
            pixels = self._process([_image(c) for c in convs], convs)
            grids = pixels["image_grid_thw"].tolist()
            merged = [int(t * h * w) // merge for t, h, w in grids]
            counts = [self.session.tokens_for_image(n) for n in merged]
            self.unreduced = [self.unreduced[0] + sum(merged), self.unreduced[1] + len(merged)]
        enc = [encode(lm, c, n, self.image_id) for c, n in zip(convs, counts)]
        return convs, enc, pixels

    def batch(
        self, convs: list[Any], enc: list[Any], pixels: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        batch = collate(enc, self.pad_id)
        if self.dynamic:
            parts = pixels if pixels is not None else self._process([_image(c) for c in convs], convs)
            batch["pixel_values"] = parts["pixel_values"].to(self.loaded.dtype)
            batch["image_grid_thw"] = parts["image_grid_thw"]
            batch["mm_token_type_ids"] = (batch["input_ids"] == self.image_id).int()
        else:
            images = prepare_images(self.loaded, [_image(c) for c in convs])
            values = self.loaded.processor.image_processor(images, return_tensors="pt")["pixel_values"]
            batch["pixel_values"] = values.to(self.loaded.dtype)
        return {k: v.to(self.device) for k, v in batch.items()}

    def _process(self, images: list[Any], convs: list[Any]) -> dict[str, torch.Tensor]:
        try:
            return dict(self.loaded.adapter.pixel_inputs(self.loaded.processor, images, []))
        except ValueError as exc:  # e.g. an aspect ratio the processor cannot resize
            ids = ", ".join(str(c.id) for c in convs)
            raise InputError(f"samples {ids}: the image processor refused an image: {exc}") from None


def _image(conv: Any) -> Any:
    try:
        return conv.image()
    except InputError as exc:
        raise InputError(f"sample {conv.id}: {exc}") from None


def train(cfg: TrainConfig, hooks: Hooks | None = None, source: Source | None = None) -> TrainReport | None:
    """Run (or resume) training; returns the report on the main rank, None on the others. `source`
    (library use) replaces `cfg.data`: an indexable collection of `Conversation`s, e.g. generated ones."""
    hooks = hooks or Hooks()
    plan = make_plan(cfg, source)  # every check that needs no weights
    accelerator = _accelerator(cfg)
    main = accelerator.is_main_process
    for text in plan.warnings if main else []:
        hooks.warn(text)
    world, rank = accelerator.num_processes, accelerator.process_index
    order = Order(len(plan.source), cfg.seed, cfg.batch_size, world, cfg.grad_accum)
    if order.steps_per_epoch == 0:
        raise InputError(
            f"{plan.source.name}: {len(plan.source)} samples, fewer than one global batch "
            f"({cfg.batch_size} x {world} ranks x {cfg.grad_accum} accumulation = {order.global_batch})"
        )
    total = cfg.max_steps if cfg.max_steps is not None else (cfg.epochs or 1) * order.steps_per_epoch
    run = settings(cfg, len(plan.source), plan.profile.hash, order.global_batch, total)
    if plan.resume_state is not None:
        assert plan.resume_from is not None
        check_resume(plan.resume_state["settings"], run, plan.resume_from)

    from duet_cli.console import prepare_transformers
    from duet_cli.engine.session import apply_profile
    from duet_cli.runtime import load_model

    prepare_transformers()
    hooks.describe("loading model")
    dtype = "float32" if cfg.dtype == "auto" else cfg.dtype
    loaded = load_model(
        cfg.model, dtype=dtype, device=str(accelerator.device), chat_template=cfg.chat_template,
        image_aspect=cfg.image_aspect,
    )  # fmt: skip
    model = loaded.model
    trainable = set_trainable(model, loaded.adapter, cfg.train)
    state: dict[str, Any] = {"step": 0, "history": [], "totals": [0.0, 0.0, 0.0, 0.0]}
    if plan.resume_from is not None:
        assert plan.resume_state is not None
        state = plan.resume_state
        weights = checkpoint.load_weights(plan.resume_from)
        missing = [n for n, p in model.named_parameters() if p.requires_grad and n not in weights]
        if missing:
            raise InputError(f"checkpoint {plan.resume_from} lacks trainable weights, e.g. {missing[0]}")
        model.load_state_dict(weights, strict=False)
    model.train()
    torch.manual_seed(cfg.seed + rank)
    with apply_profile(model, plan.profile) as session:
        module = LossModule(model, session)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = _optimizer(cfg, params)
        scheduler = _scheduler(optimizer, cfg, total)
        module, optimizer = accelerator.prepare(module, optimizer)
        if plan.resume_from is not None:
            optim = checkpoint.load_optim(plan.resume_from, rank)
            if optim is None:
                raise InputError(f"checkpoint {plan.resume_from} has no optimizer state")
            optimizer.load_state_dict(optim["optimizer"])
            scheduler.load_state_dict(optim["scheduler"])
            rng = checkpoint.load_rng(plan.resume_from, rank)
            if rng is not None:
                checkpoint.set_rng_state(rng)
        batches = Batches(plan, loaded, session, accelerator.device)
        report = _loop(
            cfg, plan, accelerator, module, optimizer, scheduler, batches, order, state, run, hooks
        )
        hooks.describe("saving model")
        full = accelerator.get_state_dict(module)
    report.trainable_parameters = trainable
    report.setup = loaded.prompting()
    total, samples = batches.unreduced
    report.unreduced_visual_tokens = total / samples if samples else session.dims.unreduced_tokens
    if main:
        report.files["model"] = str(_save_model(loaded, full, cfg.out))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return report if main else None


def _loop(
    cfg: TrainConfig,
    plan: Plan,
    accelerator: Any,
    module: Any,
    optimizer: Any,
    scheduler: Any,
    batches: Batches,
    order: Order,
    state: dict[str, Any],
    run: dict[str, Any],
    hooks: Hooks,
) -> TrainReport:
    world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    total, start = run["total_steps"], int(state["step"])
    totals = torch.tensor(state["totals"], dtype=torch.float64)  # samples, label tokens, visual in, x layers
    trainable = {n for n, p in accelerator.unwrap_model(module).named_parameters() if p.requires_grad}
    if not accelerator.is_main_process:
        hooks = Hooks()  # one progress bar: rank 0's
    hooks.start(total, start)
    hooks.describe(f"training · {plan.profile.name}")
    t0, samples_now = time.perf_counter(), 0
    for step in range(start, total):
        micro = [batches.encoded(idx) for idx in order.micro_batches(step, rank)]
        local = [sum(e.label_tokens for e in enc) for _, enc, _ in micro]
        n_global = accelerator.reduce(torch.tensor(float(sum(local)), device=device), reduction="sum")
        step_stats = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, tokens, vis in, vis x L
        for m, (convs, enc, pixels) in enumerate(micro):
            sync = m == len(micro) - 1
            with contextlib.nullcontext() if sync else accelerator.no_sync(module):
                out = module(**batches.batch(convs, enc, pixels))
                counts = out["counts"]
                if int(counts[0]) != local[m]:  # labels must survive the drops one for one
                    raise RuntimeError(f"label tokens {int(counts[0])} after the forward, {local[m]} before")
                accelerator.backward(out["loss_sum"] * world / n_global)
            step_stats += torch.cat([out["loss_sum"].detach().double().reshape(1), counts])
        # reduced before the update, so every rank sees the same loss and stops at the same step
        step_stats = accelerator.reduce(step_stats, reduction="sum").cpu()
        loss = float(step_stats[0] / step_stats[1])
        if not math.isfinite(loss):
            _diverged(cfg, step + 1, f"the loss is {loss}")
        _clip_and_check(cfg, accelerator, module, step + 1)
        lr = float(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        totals += torch.tensor([order.global_batch, *step_stats[1:].tolist()], dtype=torch.float64)
        samples_now += order.global_batch
        state["history"].append([step + 1, loss, lr])
        state["step"], state["totals"] = step + 1, totals.tolist()
        done = step + 1
        if done == total or (cfg.save_every and done % cfg.save_every == 0):
            if not _finite_weights(accelerator, module):  # never a checkpoint (or model) of them
                _diverged(cfg, done, "the weights are no longer finite after the update")
            _save_checkpoint(cfg, accelerator, module, optimizer, scheduler, trainable, state, run)
        rate = samples_now / max(time.perf_counter() - t0, 1e-9)
        hooks.step(StepInfo(done, total, loss, lr, rate))
    wall = time.perf_counter() - t0
    samples, _, vis_in, vis_layers = totals.tolist()
    num_layers = batches.loaded.adapter.dims(batches.loaded.model).num_layers
    history = state["history"]
    return TrainReport(
        model=run["model"],
        data=cfg.data,
        profile=plan.profile.name,
        steps=int(state["step"]),
        total_steps=total,
        resumed_from_step=start,
        samples=samples_now,
        wall_s=wall,
        samples_per_s=samples_now / wall if wall > 0 else 0.0,
        avg_visual_tokens=vis_layers / (samples * num_layers) if samples else 0.0,
        unreduced_visual_tokens=0,
        visual_tokens_in=vis_in / samples if samples else 0.0,
        final_loss=history[-1][1] if history else None,
        world_size=world,
        global_batch=order.global_batch,
        trainable_parameters=0,
        history=history,
    )


def _diverged(cfg: TrainConfig, step: int, what: str) -> NoReturn:
    last = checkpoint.latest(cfg.out)
    kept = (
        f"nothing of this step was saved, and {last} is the last good checkpoint"
        if last is not None
        else "no checkpoint was saved"
    )
    hint = "lower --lr" if cfg.max_grad_norm > 0 else "lower --lr, or clip gradients with --max-grad-norm"
    raise TrainingDivergedError(f"training stopped at step {step}: {what}; {kept} ({hint})")


def _clip_and_check(cfg: TrainConfig, accelerator: Any, module: Any, step: int) -> None:
    """Clip the gradient norm (if on) and stop on a non-finite one before it reaches the weights. Under
    fp16 the gradient scaler skips such steps itself (that is how it finds its scale), so no stop."""
    fp16 = accelerator.mixed_precision == "fp16"
    if cfg.max_grad_norm <= 0 and fp16:
        return
    # max_norm=inf measures without clipping (the coefficient clamps to 1)
    norm = accelerator.clip_grad_norm_(module.parameters(), cfg.max_grad_norm or math.inf)
    if not fp16 and norm is not None and not math.isfinite(float(norm)):
        _diverged(cfg, step, f"the gradient norm is {float(norm)}")


def _finite_weights(accelerator: Any, module: Any) -> bool:
    """Whether every trainable weight is finite on every rank (collective: call it on all ranks)."""
    bad = torch.zeros(1, device=accelerator.device)
    for p in accelerator.unwrap_model(module).parameters():
        if p.requires_grad and not bool(torch.isfinite(p.detach()).all()):
            bad += 1
            break
    return float(accelerator.reduce(bad, reduction="sum")) == 0


def _save_checkpoint(
    cfg: TrainConfig,
    accelerator: Any,
    module: Any,
    optimizer: Any,
    scheduler: Any,
    trainable: set[str],
    state: dict[str, Any],
    run: dict[str, Any],
) -> None:
    from accelerate.utils import DistributedType

    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    full = accelerator.get_state_dict(module)  # collective under FSDP / DeepSpeed
    weights = None
    if accelerator.is_main_process:
        weights = {
            k[len("model.") :]: v for k, v in full.items() if k.startswith("model.") and k in trainable
        }
    optim = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    doc = {"step": state["step"], "settings": run, "history": state["history"], "totals": state["totals"]}
    checkpoint.save(
        cfg.out,
        int(state["step"]),
        accelerator=accelerator,
        weights=weights,
        optim_state=optim,
        state=doc,
        sharded_optimizer=sharded,
        keep=cfg.keep,
    )


def _save_model(loaded: Any, full: dict[str, torch.Tensor], out: Path) -> Path:
    """save_pretrained (+ processor) into OUT/model, swapped in atomically."""
    target, tmp, old = out / "model", out / ".tmp-model", out / ".old-model"
    for stale in (tmp, old):
        shutil.rmtree(stale, ignore_errors=True)
    weights = {k[len("model.") :]: v for k, v in full.items() if k.startswith("model.")}
    try:
        loaded.model.save_pretrained(tmp, state_dict=weights)
        loaded.processor.save_pretrained(tmp)
    except Exception as exc:  # a full disk or a quota: one line, no half-written folder, OUT/model kept
        from duet_cli.reports.jsonio import write_failure

        failure = write_failure("the trained model", target, exc)
        if failure is None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        raise failure from None
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


__all__ = ["IGNORE", "Hooks", "StepInfo", "TrainConfig", "TrainReport", "TrainingDivergedError", "train"]
