"""`duet train`'s settings and every check that runs before a model loads (DESIGN.md section 5).

Bad options, an unwritable --out, a profile the model cannot take, unreadable data, and a --resume
that does not match its checkpoint all fail here, in one line, before any weights are read.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from duet_cli.errors import UsageError
from duet_cli.gen_settings import check_rows, check_seed

if TYPE_CHECKING:
    from duet_cli.training.data import Source

PARTS = ("vision", "projector", "llm")
SCHEDULES = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}
# a resumed run must agree with its checkpoint on these (they decide data order and the schedule)
RESUME_KEYS = (
    "model",
    "chat_template",
    "image_aspect",
    "data",
    "samples",
    "profile_hash",
    "seed",
    "global_batch",
    "total_steps",
    "lr",
    "optimizer",
    "schedule",
    "warmup_steps",
    "weight_decay",
    "train",
)


@dataclass
class TrainConfig:
    data: str  # "synth" or a LLaVA JSON / JSONL file
    out: Path
    model: str | None = None
    profile: str = "baseline"
    image_folder: Path | None = None
    limit: int | None = None  # first N records (synth: images)
    epochs: int | None = None
    max_steps: int | None = None
    lr: float = 2e-5
    optimizer: str = "adamw"  # adamw | sgd (plain, no momentum)
    schedule: str = "cosine"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0 turns clipping off
    batch_size: int = 1
    grad_accum: int = 1
    train: tuple[str, ...] = ("projector", "llm")
    seed: int = 0
    resume: bool = False
    save_every: int | None = None
    keep: int = 2
    strict: bool = False
    dtype: str = "auto"  # auto = float32 master weights (use --mixed-precision for bf16 compute)
    mixed_precision: str | None = None  # no / bf16 / fp16; None = accelerate's config or env
    device: str = "auto"
    chat_template: str | None = None  # --chat-template (a file or a string): instead of the model's own
    image_aspect: str | None = None  # --image-aspect (LLaVA families): pad or crop


@dataclass
class Plan:
    """What the checks produced: resolved profile, data source, resume point."""

    cfg: TrainConfig
    profile: Any  # Profile
    resolved: Any  # ResolvedProfile against the model's dims
    source: Any  # data.Source
    warnings: list[str] = field(default_factory=list)
    resume_from: Path | None = None
    resume_state: dict[str, Any] | None = None


def parse_parts(text: str) -> tuple[str, ...]:
    parts = tuple(dict.fromkeys(p.strip().lower() for p in text.split(",") if p.strip()))
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise UsageError(f"--train {text!r}: choose a comma-separated subset of {', '.join(PARTS)}")
    return tuple(p for p in PARTS if p in parts)


def _check_options(cfg: TrainConfig) -> None:
    if cfg.epochs is not None and cfg.max_steps is not None:
        raise UsageError("give --epochs or --max-steps, not both")
    if cfg.schedule not in SCHEDULES:
        raise UsageError(f"--schedule {cfg.schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if cfg.optimizer not in ("adamw", "sgd"):
        raise UsageError(f"--optimizer {cfg.optimizer!r}: choose adamw or sgd")
    if cfg.mixed_precision not in (None, "no", "bf16", "fp16"):
        raise UsageError(f"--mixed-precision {cfg.mixed_precision!r}: choose no, bf16 or fp16")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise UsageError(
            f"--device {cfg.device!r}: training takes auto, cpu or cuda (each rank picks its own GPU)"
        )
    # nan passes every comparison and inf trains to non-finite weights: both refused here
    if not math.isfinite(cfg.lr) or cfg.lr <= 0:
        raise UsageError(f"--lr {cfg.lr}: the learning rate must be a finite number > 0")
    if not math.isfinite(cfg.weight_decay) or cfg.weight_decay < 0:
        raise UsageError(f"--weight-decay {cfg.weight_decay}: give a finite number >= 0")
    if not math.isfinite(cfg.max_grad_norm) or cfg.max_grad_norm < 0:
        raise UsageError(
            f"--max-grad-norm {cfg.max_grad_norm}: give a finite number >= 0 (0 turns clipping off)"
        )
    check_seed(cfg.seed)
    check_rows(cfg.batch_size, 1)
    parse_parts(",".join(cfg.train))


def settings(cfg: TrainConfig, plan_samples: int, profile_hash: str, global_batch: int, total: int) -> dict:
    """The run's settings as stored in every checkpoint (and compared on --resume)."""
    from duet_cli.catalog import default_model
    from duet_cli.inputs.chat_template import option_digest
    from duet_cli.inputs.image_aspect import declared_aspect

    model = cfg.model or default_model()
    return {
        "model": model,
        "chat_template": option_digest(cfg.chat_template),  # None: the model's own
        "image_aspect": declared_aspect(model, cfg.image_aspect),
        "data": cfg.data,
        "samples": plan_samples,
        "profile": cfg.profile,
        "profile_hash": profile_hash,
        "seed": cfg.seed,
        "global_batch": global_batch,
        "total_steps": total,
        "lr": cfg.lr,
        "optimizer": cfg.optimizer,
        "schedule": cfg.schedule,
        "warmup_steps": cfg.warmup_steps,
        "weight_decay": cfg.weight_decay,
        "train": list(cfg.train),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
    }


def check_resume(stored: dict[str, Any], current: dict[str, Any], folder: Path) -> None:
    diffs = [
        f"{k}={stored.get(k)!r} (now {current[k]!r})" for k in RESUME_KEYS if stored.get(k) != current[k]
    ]
    if diffs:
        raise UsageError(
            f"--resume: checkpoint {folder} was made with different settings: {'; '.join(diffs)}"
        )


def make_plan(cfg: TrainConfig, source: Source | None = None) -> Plan:
    """Run every check that needs no weights; raise one DuetError on the first failure. `source`, when
    given, replaces `cfg.data` (library use: any indexable collection of `Conversation`s)."""
    from duet_cli.catalog import default_model, dims_for
    from duet_cli.profiles import load_profile, resolve_profile
    from duet_cli.reports.jsonio import check_not_replacing, check_writable
    from duet_cli.training import checkpoint
    from duet_cli.training.data import Problems, open_source

    _check_options(cfg)
    # before any model loads: the outputs must be writable and never an input (the data, the profile,
    # the model folder, the images), nor may an input sit in a folder the run replaces
    inputs = [cfg.data, cfg.profile, cfg.model, cfg.image_folder]
    for name in ("report.json", "loss.png"):
        check_writable(cfg.out / name, inputs)
    check_not_replacing([cfg.out / "model", checkpoint.checkpoint_root(cfg.out)], inputs)
    profile = load_profile(cfg.profile)
    resolved = resolve_profile(profile, dims_for(cfg.model or default_model()))
    if source is None:
        source, problems = open_source(cfg.data, cfg.image_folder, strict=cfg.strict, limit=cfg.limit)
    else:
        problems = Problems()
    warnings = []
    if problems.malformed:
        warnings.append(
            f"skipped {len(problems.malformed)} malformed record(s); first: {problems.malformed[0]}"
        )
    if problems.missing_images:
        warnings.append(
            f"skipped {len(problems.missing_images)} record(s) whose image is missing; "
            f"first: {problems.missing_images[0]}"
        )
    plan = Plan(cfg, profile, resolved, source, warnings)
    found = checkpoint.latest(cfg.out)
    if found is not None and not cfg.resume:
        raise UsageError(
            f"{cfg.out} already holds checkpoint {found.name}: pass --resume to continue it, "
            "or choose another --out"
        )
    if found is not None:
        plan.resume_from, plan.resume_state = found, checkpoint.load_state(found)
    return plan
