"""The configuration of a Wan2.1 fine-tuning job and of a benchmark generation job, with the paper's defaults.

Plain Python (no torch, no Django): the job form builds a :class:`TrainConfig` / :class:`GenerateConfig` from what a
researcher typed, shows :func:`validate`'s problems, and stores :meth:`TrainConfig.to_dict` as the job's config;
``python -m training_jobs.train --config CONFIG.json`` reads that dictionary back with :meth:`TrainConfig.from_dict`.

Paper defaults (fine-tuning): batch 8, 5,000 steps, learning rate 1e-5 for full fine-tuning (1e-4 for LoRA), bf16,
classifier-free-guidance drop rate 0.1, 480x832, 81 frames, weight decay 0.01, gradient checkpointing, a checkpoint
every 500 steps. Generation: 50 steps, guidance 5.0, 480x832, 81 frames, a fixed seed.

Wan2.1's VAE compresses 4x in time and 8x in space and its transformer patches are 2x2, so ``num_frames`` must be
``4k + 1`` and height and width multiples of 16.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

DEFAULT_LR_FULL = 1e-5
DEFAULT_LR_LORA = 1e-4
#: The attention projections of every Wan transformer block (self- and cross-attention), diffusers' module names.
DEFAULT_LORA_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
MODES = ("full", "lora")
MIXED_PRECISIONS = ("bf16", "fp16", "no")
#: How the flow-matching noise level u in (0, 1) is drawn before the shift (see training_jobs.train):
#: uniform, logit-normal (SD3's, mean/std below) or SD3's "mode" sampling.
TIMESTEP_SAMPLINGS = ("uniform", "logit_normal", "mode")
LR_SCHEDULERS = ("constant", "linear", "cosine")
MAX_SIZE = 2048
MAX_FRAMES = 1024


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _video_shape_problems(height: Any, width: Any, num_frames: Any) -> list[str]:
    problems = []
    for name, value in (("height", height), ("width", width)):
        if not _positive_int(value):
            problems.append(f"{name} must be a positive whole number of pixels (got {value!r}).")
        elif value % 16:
            problems.append(f"{name} {value} is not a multiple of 16 (Wan needs multiples of 16, e.g. 480 or 832).")
        elif value > MAX_SIZE:
            problems.append(f"{name} {value} is larger than {MAX_SIZE} pixels.")
    if not _positive_int(num_frames):
        problems.append(f"num_frames must be a positive whole number (got {num_frames!r}).")
    elif num_frames % 4 != 1:
        problems.append(f"num_frames {num_frames} is not of the form 4k+1 (e.g. 81, 49, 5): Wan's VAE compresses "
                        "time 4x after the first frame.")
    elif num_frames > MAX_FRAMES:
        problems.append(f"num_frames {num_frames} is more than {MAX_FRAMES}.")
    return problems


class _StoredSettings:
    """Dictionary round trip of a settings dataclass (a job's stored config, a CONFIG.json); ``KIND`` names the
    settings in the error for unknown keys."""

    KIND = "settings"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Build from a dictionary; unknown keys raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.KIND} setting(s): {', '.join(unknown)}")
        return cls(**data)


@dataclass
class TrainConfig(_StoredSettings):
    """One fine-tuning run. Paths are on the machine the trainer runs on (the cluster's shared filesystem)."""

    KIND = "training"

    # What to train on and where to write.
    weights: str = ""  # base weights directory in the diffusers layout (e.g. Wan2.1-T2V-1.3B-Diffusers)
    manifest: str = ""  # the snapshot manifest: JSON list of {"id", "video", "prompt"}
    data_root: str = ""  # directory the manifest's video paths are relative to ("": the manifest's directory)
    output_dir: str = ""  # checkpoints/, metrics.jsonl, cache/ (encoded latents and prompts)
    # What is trained.
    mode: str = "full"  # "full" or "lora"
    lora_rank: int = 32
    lora_alpha: float | None = None  # None: equal to the rank (scale 1)
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGET_MODULES))
    # Optimisation (paper defaults).
    batch_size: int = 8  # global batch per optimizer step: per-GPU micro-batch x GPUs x gradient_accumulation_steps
    gradient_accumulation_steps: int = 1
    max_steps: int = 5000
    learning_rate: float | None = None  # None: 1e-5 for full fine-tuning, 1e-4 for LoRA
    lr_scheduler: str = "constant"  # after warm-up: constant, linear decay to 0, or cosine decay to 0
    lr_warmup_steps: int = 0
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0  # 0: no clipping
    mixed_precision: str = "bf16"
    gradient_checkpointing: bool = True
    cfg_drop_rate: float = 0.1  # probability that a sample's prompt is replaced by the empty prompt's embedding
    # Flow matching: u drawn by timestep_sampling, then sigma = shift*u / (1 + (shift-1)*u) (Wan's flow shift).
    timestep_sampling: str = "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29
    flow_shift: float = 3.0
    # Data.
    height: int = 480
    width: int = 832
    num_frames: int = 81
    max_sequence_length: int = 512  # UMT5 tokens per prompt (Wan2.1 uses 512)
    # Checkpoints and reproducibility.
    save_every: int = 500
    seed: int = 42

    @property
    def effective_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return DEFAULT_LR_LORA if self.mode == "lora" else DEFAULT_LR_FULL



@dataclass
class GenerateConfig(_StoredSettings):
    """Benchmark video generation: one video per task (paper: 50 steps, guidance 5.0, 480x832, 81 frames)."""

    KIND = "generation"

    weights: str = ""
    checkpoint: str = ""  # a trainer checkpoint directory (full weights or LoRA adapter); "": the base model
    prompts: str = ""  # JSON list of {"index", "prompt"}
    output_dir: str = ""  # videos go to <output_dir>/<model_name>/<index>.mp4
    model_name: str = ""  # "": the checkpoint's run directory name, else the weights directory name
    steps: int = 50
    guidance: float = 5.0
    height: int = 480
    width: int = 832
    num_frames: int = 81
    seed: int = 42
    fps: float = 16.0  # Wan2.1 generates 16 frames per second
    negative_prompt: str = ""
    max_sequence_length: int = 512
    mixed_precision: str = "bf16"  # the dtype of the transformer and text encoder on a GPU (CPU runs in float32)


def validate(config: TrainConfig | GenerateConfig) -> list[str]:
    """The problems that stop ``config`` from running, as sentences for people ([] when it can run).

    Checks values only; whether the paths exist is checked by the trainer and generator where they run (the job
    form checks the registered weights and the snapshot itself)."""
    if isinstance(config, GenerateConfig):
        return _validate_generate(config)
    c = config
    problems = _video_shape_problems(c.height, c.width, c.num_frames)
    if c.mode not in MODES:
        problems.append(f"mode must be one of {', '.join(MODES)} (got {c.mode!r}).")
    if c.mode == "lora":
        if not _positive_int(c.lora_rank):
            problems.append(f"LoRA rank must be a positive whole number (got {c.lora_rank!r}).")
        if c.lora_alpha is not None and not (_number(c.lora_alpha) and c.lora_alpha > 0):
            problems.append(f"LoRA alpha must be positive (got {c.lora_alpha!r}).")
        if not (_number(c.lora_dropout) and 0 <= c.lora_dropout < 1):
            problems.append(f"LoRA dropout must be in [0, 1) (got {c.lora_dropout!r}).")
        if (not isinstance(c.lora_target_modules, (list, tuple)) or not c.lora_target_modules
                or not all(isinstance(m, str) and m.strip() for m in c.lora_target_modules)):
            problems.append("LoRA target modules must be a non-empty list of module names (e.g. to_q, to_k, to_v).")
    if not _positive_int(c.batch_size):
        problems.append(f"batch size must be at least 1 (got {c.batch_size!r}).")
    if not _positive_int(c.gradient_accumulation_steps):
        problems.append(f"gradient accumulation steps must be at least 1 (got {c.gradient_accumulation_steps!r}).")
    elif _positive_int(c.batch_size) and c.batch_size % c.gradient_accumulation_steps:
        problems.append(f"batch size {c.batch_size} is not divisible by the {c.gradient_accumulation_steps} "
                        "gradient accumulation steps.")
    if not _positive_int(c.max_steps):
        problems.append(f"the number of steps must be at least 1 (got {c.max_steps!r}).")
    lr = c.learning_rate
    if lr is not None and not (_number(lr) and lr > 0):
        problems.append(f"learning rate must be positive (got {lr!r}).")
    elif lr is not None and lr >= 1:
        problems.append(f"learning rate {lr} is not below 1.")
    if c.lr_scheduler not in LR_SCHEDULERS:
        problems.append(f"learning-rate schedule must be one of {', '.join(LR_SCHEDULERS)} (got {c.lr_scheduler!r}).")
    if not (isinstance(c.lr_warmup_steps, int) and not isinstance(c.lr_warmup_steps, bool)
            and c.lr_warmup_steps >= 0):
        problems.append(f"warm-up steps must be 0 or more (got {c.lr_warmup_steps!r}).")
    if not (_number(c.weight_decay) and c.weight_decay >= 0):
        problems.append(f"weight decay must be 0 or more (got {c.weight_decay!r}).")
    for name in ("adam_beta1", "adam_beta2"):
        value = getattr(c, name)
        if not (_number(value) and 0 <= value < 1):
            problems.append(f"{name} must be in [0, 1) (got {value!r}).")
    if not (_number(c.adam_epsilon) and c.adam_epsilon > 0):
        problems.append(f"adam_epsilon must be positive (got {c.adam_epsilon!r}).")
    if not (_number(c.max_grad_norm) and c.max_grad_norm >= 0):
        problems.append(f"max_grad_norm must be 0 (no clipping) or more (got {c.max_grad_norm!r}).")
    if c.mixed_precision not in MIXED_PRECISIONS:
        problems.append(f"mixed precision must be one of {', '.join(MIXED_PRECISIONS)} (got {c.mixed_precision!r}).")
    if not isinstance(c.gradient_checkpointing, bool):
        problems.append("gradient checkpointing must be true or false.")
    if not (_number(c.cfg_drop_rate) and 0 <= c.cfg_drop_rate <= 1):
        problems.append(f"CFG drop rate must be between 0 and 1 (got {c.cfg_drop_rate!r}).")
    if c.timestep_sampling not in TIMESTEP_SAMPLINGS:
        problems.append(f"timestep sampling must be one of {', '.join(TIMESTEP_SAMPLINGS)} "
                        f"(got {c.timestep_sampling!r}).")
    if not (_number(c.logit_std) and c.logit_std > 0) or not _number(c.logit_mean) or not _number(c.mode_scale):
        problems.append("logit_mean, logit_std (> 0) and mode_scale must be numbers.")
    if not (_number(c.flow_shift) and c.flow_shift > 0):
        problems.append(f"flow shift must be positive (got {c.flow_shift!r}).")
    if not _positive_int(c.max_sequence_length):
        problems.append(f"max_sequence_length must be at least 1 (got {c.max_sequence_length!r}).")
    if not _positive_int(c.save_every):
        problems.append(f"save_every must be at least 1 step (got {c.save_every!r}).")
    if not (isinstance(c.seed, int) and not isinstance(c.seed, bool) and c.seed >= 0):
        problems.append(f"seed must be a whole number 0 or more (got {c.seed!r}).")
    return problems


def _validate_generate(c: GenerateConfig) -> list[str]:
    problems = _video_shape_problems(c.height, c.width, c.num_frames)
    if not _positive_int(c.steps):
        problems.append(f"the number of sampling steps must be at least 1 (got {c.steps!r}).")
    if not (_number(c.guidance) and c.guidance >= 0):
        problems.append(f"guidance scale must be 0 or more (got {c.guidance!r}).")
    if not (isinstance(c.seed, int) and not isinstance(c.seed, bool) and c.seed >= 0):
        problems.append(f"seed must be a whole number 0 or more (got {c.seed!r}).")
    if not (_number(c.fps) and c.fps > 0):
        problems.append(f"fps must be positive (got {c.fps!r}).")
    if not _positive_int(c.max_sequence_length):
        problems.append(f"max_sequence_length must be at least 1 (got {c.max_sequence_length!r}).")
    if c.mixed_precision not in MIXED_PRECISIONS:
        problems.append(f"mixed precision must be one of {', '.join(MIXED_PRECISIONS)} (got {c.mixed_precision!r}).")
    if c.model_name and ("/" in c.model_name or "\\" in c.model_name or c.model_name in (".", "..")):
        problems.append(f"model name {c.model_name!r} must not contain a path separator.")
    return problems
