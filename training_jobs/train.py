"""The Wan2.1 text-to-video fine-tuning program (full or LoRA), run on GPU nodes. No Django import.

    python -m training_jobs.train --config CONFIG.json [--resume] [--max-steps 100 ...]
    accelerate launch --num_processes 8 -m training_jobs.train --config CONFIG.json     (multi-GPU)

Every field of :class:`training_jobs.wan.config.TrainConfig` is also a flag (``--learning-rate``, ``--num-frames``,
``--no-gradient-checkpointing``, ``--lora-target-modules to_q,to_k`` ...); flags override the config file.

What it does
    1. Checks the settings (:func:`training_jobs.wan.config.validate`), the weights directory and the snapshot
       manifest (a JSON list of ``{"id", "video", "prompt"}``, video paths relative to ``data_root``, by default the
       manifest's folder). Bad input ends the program with exit status 2 and ``error: ...`` on stderr, before any
       model is loaded.
    2. Encodes each clip once: ``num_frames`` frames sampled evenly over the clip (OpenCV through
       :mod:`datasets.video_io`), each scaled to cover ``height`` x ``width`` and centre-cropped, then encoded with
       the Wan VAE (the latent distribution's mode, normalised with the VAE's ``latents_mean``/``latents_std`` as
       WanPipeline expects); the prompt is encoded with the UMT5 encoder as WanPipeline does (cleaned, tokenised to
       ``max_sequence_length``, embeddings past the prompt's tokens zeroed), and so is the empty prompt. Results go
       to ``<output_dir>/cache/`` (one safetensors file per clip, keyed by everything they depend on), so a resumed
       run does not encode again; with several GPUs each process encodes its share. The VAE and text encoder are
       then freed: only the transformer stays on the GPU.
    3. Trains the transformer with the rectified-flow (flow-matching) objective used by Wan: for a clean latent x0
       and Gaussian noise e, draw u in (0, 1) (``timestep_sampling``: uniform, logit-normal or SD3's mode
       sampling, the formulas of diffusers' ``compute_density_for_timestep_sampling`` used by its flow-matching
       training examples: :func:`sample_noise_levels`), shift it as Wan's scheduler does,
       sigma = shift*u / (1 + (shift-1)*u) (``flow_shift``, 3.0 like Wan2.1's sampler), set
       x_t = (1 - sigma) x0 + sigma e and regress the transformer's output at timestep 1000*sigma on the velocity
       e - x0 (mean squared error). With probability ``cfg_drop_rate`` a sample's prompt embedding is replaced by
       the empty prompt's, which is what classifier-free guidance needs at sampling time.
       Full fine-tuning trains every transformer weight (float32 master weights, autocast to bf16/fp16 through
       accelerate); LoRA (peft ``LoraConfig``: rank, alpha, target modules) keeps the base weights frozen in the
       mixed-precision dtype and trains float32 adapters. AdamW with weight decay, a constant/linear/cosine schedule
       with optional warm-up, gradient clipping, gradient checkpointing, gradient accumulation; ``batch_size`` is
       the global batch per optimizer step (micro-batch x processes x accumulation steps).
    4. Every ``save_every`` steps and at the end, writes a checkpoint (see :mod:`training_jobs.wan.weights`):
       safetensors weights (the transformer, or the LoRA adapter in diffusers' format), the optimizer and schedule
       state, and ``trainer_state.json``; written under a temporary name and renamed. ``--resume`` continues from
       the latest complete checkpoint in ``output_dir`` at the next step (starting afresh when there is none).
       The data order, the noise and the CFG drops of step N depend only on the seed and N, so a resumed run sees
       exactly what the interrupted one would have.
    5. Prints one JSON line per optimizer step on stdout and appends it to ``<output_dir>/metrics.jsonl``:
       ``{"step", "loss", "lr", "seconds", "gpu_memory_mb"}`` (loss averaged over the global batch; seconds: that
       step's wall time; gpu_memory_mb: that step's peak allocated CUDA memory on the main process, 0 on a CPU).
       stdout carries nothing else; messages for people go to stderr.

Exit status: 0 done; 2 bad input (message on stderr); 1 anything unexpected (traceback on stderr).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
import typing
from pathlib import Path

from training_jobs.wan import weights as wan_weights
from training_jobs.wan.config import TrainConfig, validate

EXIT_BAD_INPUT = 2
METRICS_FILE = "metrics.jsonl"
CACHE_DIR = "cache"
CACHE_VERSION = 1


class InputError(Exception):
    """Bad input: the run cannot start (exit status 2, the message on stderr)."""


def log(message: str) -> None:
    print(f"[train] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- configuration


def _field_type(field: dataclasses.Field) -> str:
    hints = typing.get_type_hints(TrainConfig)
    text = str(hints[field.name])
    for name in ("bool", "int", "float", "list"):
        if name in text:
            return name
    return "str"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training_jobs.train",
                                     description="Fine-tune Wan2.1 text-to-video (full or LoRA) on a snapshot.")
    parser.add_argument("--config", help="JSON file of TrainConfig settings (flags override it)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the latest checkpoint in the output directory (if any)")
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        kind = _field_type(field)
        if kind == "bool":
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, default=None)
        elif kind == "list":
            parser.add_argument(flag, dest=field.name, default=None, metavar="A,B,...",
                                type=lambda text: [part.strip() for part in text.split(",") if part.strip()])
        else:
            parser.add_argument(flag, dest=field.name, default=None, type=_number_parser(kind))
    # Short aliases.
    parser.add_argument("--out", dest="output_dir", default=None)
    parser.add_argument("--steps", dest="max_steps", type=int, default=None)
    parser.add_argument("--lr", dest="learning_rate", type=float, default=None)
    parser.add_argument("--frames", dest="num_frames", type=int, default=None)
    return parser


def _number_parser(kind: str):
    if kind == "int":
        return int
    if kind == "float":
        return float
    return str


def load_config(args: argparse.Namespace) -> TrainConfig:
    data: dict = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise InputError(f"config file {str(path)!r} does not exist.")
        try:
            data = json.loads(path.read_text())
        except ValueError as error:
            raise InputError(f"config file {str(path)!r} is not valid JSON ({error}).") from None
        if not isinstance(data, dict):
            raise InputError(f"config file {str(path)!r} must hold a JSON object of settings.")
    for field in dataclasses.fields(TrainConfig):
        value = getattr(args, field.name, None)
        if value is not None:
            data[field.name] = value
    try:
        return TrainConfig.from_dict(data)
    except (TypeError, ValueError) as error:
        raise InputError(str(error)) from None


# ------------------------------------------------------------------------------------------------- manifest


@dataclasses.dataclass(frozen=True)
class Sample:
    id: str
    video: Path
    prompt: str


def load_manifest(manifest: str, data_root: str = "") -> list[Sample]:
    """The snapshot's samples; raises :class:`InputError` naming what is wrong (missing file, bad JSON, an entry
    without id/video/prompt, duplicate ids, videos that do not exist)."""
    if not manifest:
        raise InputError("no manifest was given (--manifest).")
    path = Path(manifest)
    if not path.is_file():
        raise InputError(f"manifest {str(path)!r} does not exist.")
    try:
        entries = json.loads(path.read_text())
    except ValueError as error:
        raise InputError(f"manifest {str(path)!r} is not valid JSON ({error}).") from None
    if not isinstance(entries, list) or not entries:
        raise InputError(f"manifest {str(path)!r} must be a non-empty JSON list of {{id, video, prompt}}.")
    root = Path(data_root) if data_root else path.parent
    samples, seen, missing = [], set(), []
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) and entry.get(k).strip()
                                                  for k in ("id", "video", "prompt")):
            raise InputError(f"manifest entry {number} must have non-empty string fields id, video and prompt.")
        if entry["id"] in seen:
            raise InputError(f"manifest id {entry['id']!r} appears more than once.")
        seen.add(entry["id"])
        video = Path(entry["video"])
        video = video if video.is_absolute() else root / video
        if not video.is_file():
            missing.append(str(video))
        samples.append(Sample(id=entry["id"], video=video, prompt=entry["prompt"]))
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise InputError(f"{len(missing)} video(s) of the manifest do not exist: {', '.join(missing[:5])}{more}.")
    return samples


def check_inputs(config: TrainConfig) -> list[Sample]:
    problems = validate(config)
    problems += wan_weights.weights_problems(config.weights)
    if not config.output_dir:
        problems.append("no output directory was given (--output-dir).")
    if problems:
        raise InputError("\n  ".join(["the settings cannot run:", *problems]))
    return load_manifest(config.manifest, config.data_root)


# ----------------------------------------------------------------------------------------------- clip decoding


def sample_indices(frame_count: int, num_frames: int) -> list[int]:
    """``num_frames`` frame numbers spread evenly from the first frame to the last (repeats when the clip is
    shorter than ``num_frames``)."""
    if num_frames == 1:
        return [0]
    return [round(i * (frame_count - 1) / (num_frames - 1)) for i in range(num_frames)]


def load_clip(path: Path, num_frames: int, height: int, width: int):
    """The clip as a float tensor (3, num_frames, height, width) in [-1, 1], RGB."""
    import cv2
    import numpy as np
    import torch

    from datasets import video_io

    info = video_io.probe(path)
    frames = video_io.read_frames(path, sample_indices(info.frame_count, num_frames))
    out = []
    for frame in frames:
        h, w = frame.shape[:2]
        scale = max(height / h, width / w)  # cover the target, then centre-crop
        new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        frame = cv2.resize(frame, (new_w, new_h), interpolation=interpolation)
        top, left = (new_h - height) // 2, (new_w - width) // 2
        frame = frame[top:top + height, left:left + width, ::-1]  # BGR -> RGB
        out.append(frame)
    array = np.ascontiguousarray(np.stack(out))  # (F, H, W, 3) uint8
    tensor = torch.from_numpy(array).permute(3, 0, 1, 2).float()
    return tensor / 127.5 - 1.0


# --------------------------------------------------------------------------------------------------- trainer


class Trainer:
    def __init__(self, config: TrainConfig, samples: list[Sample], *, resume: bool = False):
        import torch
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.config = config
        self.samples = samples
        self.output_dir = Path(config.output_dir)
        self.cache_dir = self.output_dir / CACHE_DIR
        self.metrics_path = self.output_dir / METRICS_FILE
        self.accelerator = Accelerator(mixed_precision=config.mixed_precision,
                                       gradient_accumulation_steps=config.gradient_accumulation_steps)
        self.device = self.accelerator.device
        self.weight_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.mixed_precision,
                                                                                 torch.float32)
        world = self.accelerator.num_processes
        per_step = world * config.gradient_accumulation_steps
        if config.batch_size % per_step:
            raise InputError(f"batch size {config.batch_size} is not divisible by {world} process(es) x "
                             f"{config.gradient_accumulation_steps} gradient accumulation step(s).")
        self.micro_batch = config.batch_size // per_step
        self.resume_from = wan_weights.latest_checkpoint(self.output_dir) if resume else None
        self.start_step = 0
        if self.resume_from is not None:
            state = wan_weights.read_trainer_state(self.resume_from)
            if state.get("mode") != config.mode:
                raise InputError(f"the latest checkpoint {str(self.resume_from)!r} is a {state.get('mode')} "
                                 f"fine-tuning checkpoint; this run is {config.mode}.")
            self.start_step = int(state["step"])
        elif resume:
            log(f"no checkpoint in {str(self.output_dir)!r}: starting from step 0")
        set_seed(config.seed)
        self._permutations: dict[int, list[int]] = {}

    # ---- encoding -----------------------------------------------------------------------------------------

    def _cache_key(self, *parts) -> str:
        c = self.config
        text = json.dumps([CACHE_VERSION, str(Path(c.weights).resolve()), c.height, c.width, c.num_frames,
                           c.max_sequence_length, str(self.weight_dtype), *parts])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _clip_cache_path(self, sample: Sample) -> Path:
        stat = sample.video.stat()
        key = self._cache_key(str(sample.video.resolve()), stat.st_size, stat.st_mtime_ns, sample.prompt)
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in sample.id)[:80]
        return self.cache_dir / f"{safe}-{key}.safetensors"

    def _empty_prompt_path(self) -> Path:
        return self.cache_dir / f"empty-prompt-{self._cache_key('')}.safetensors"

    def encode_dataset(self) -> None:
        """Encode every clip and prompt not in the cache yet (each process its share), then free the encoders."""
        import torch
        from diffusers import AutoencoderKLWan
        from safetensors.torch import save_file
        from transformers import AutoTokenizer, UMT5EncoderModel

        from datasets.video_io import UnreadableVideo

        acc = self.accelerator
        self.cache_paths = [self._clip_cache_path(s) for s in self.samples]
        mine = [i for i in range(len(self.samples)) if i % acc.num_processes == acc.process_index]
        todo = [i for i in mine if not self.cache_paths[i].is_file()]
        need_empty = acc.is_main_process and not self._empty_prompt_path().is_file()
        if todo or need_empty:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            weights = self.config.weights
            log(f"encoding {len(todo)} clip(s) with the VAE and the text encoder")
            tokenizer = AutoTokenizer.from_pretrained(weights, subfolder="tokenizer", local_files_only=True)
            text_encoder = UMT5EncoderModel.from_pretrained(weights, subfolder="text_encoder",
                                                            dtype=self.weight_dtype, local_files_only=True)
            vae = AutoencoderKLWan.from_pretrained(weights, subfolder="vae", dtype=torch.float32,
                                                   local_files_only=True)
            text_encoder.to(self.device).eval().requires_grad_(False)
            vae.to(self.device).eval().requires_grad_(False)
            mean = torch.tensor(vae.config.latents_mean, device=self.device).view(1, -1, 1, 1, 1)
            std = torch.tensor(vae.config.latents_std, device=self.device).view(1, -1, 1, 1, 1)
            failures = []
            with torch.no_grad():
                if need_empty:
                    _save_atomic(save_file, {"prompt_embeds": self._encode_prompt(tokenizer, text_encoder, "")},
                                 self._empty_prompt_path())
                for number, i in enumerate(todo, 1):
                    sample = self.samples[i]
                    try:
                        video = load_clip(sample.video, self.config.num_frames, self.config.height,
                                          self.config.width)
                    except UnreadableVideo as error:
                        failures.append(f"{sample.id} ({sample.video}): {error.reason}")
                        continue
                    latents = vae.encode(video.unsqueeze(0).to(self.device, torch.float32)).latent_dist.mode()
                    latents = ((latents - mean) / std)[0].to(self.weight_dtype).cpu().contiguous()
                    embeds = self._encode_prompt(tokenizer, text_encoder, sample.prompt)
                    _save_atomic(save_file, {"latents": latents, "prompt_embeds": embeds}, self.cache_paths[i])
                    if number % 100 == 0:
                        log(f"encoded {number}/{len(todo)} clip(s)")
            del text_encoder, vae
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if failures:
                more = f" and {len(failures) - 5} more" if len(failures) > 5 else ""
                raise InputError(f"{len(failures)} clip(s) cannot be decoded: {'; '.join(failures[:5])}{more}.")
        acc.wait_for_everyone()

    def _encode_prompt(self, tokenizer, text_encoder, prompt: str):
        """The prompt's UMT5 embeddings (tokens, text_dim) without padding, as WanPipeline computes them."""
        from diffusers.pipelines.wan.pipeline_wan import prompt_clean

        inputs = tokenizer([prompt_clean(prompt)], padding="max_length", max_length=self.config.max_sequence_length,
                           truncation=True, add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        mask = inputs.attention_mask
        length = int(mask.gt(0).sum())
        hidden = text_encoder(inputs.input_ids.to(self.device), mask.to(self.device)).last_hidden_state
        return hidden[0, :length].to(self.weight_dtype).cpu().contiguous()

    # ---- model ----------------------------------------------------------------------------------------------

    def build_model(self):
        import torch
        from diffusers import WanTransformer3DModel
        from diffusers.optimization import get_scheduler

        c = self.config
        source = (self.resume_from / "transformer") if (self.resume_from and c.mode == "full") else None
        if source is not None:
            transformer = WanTransformer3DModel.from_pretrained(source, dtype=torch.float32,
                                                                local_files_only=True)
        else:
            transformer = WanTransformer3DModel.from_pretrained(c.weights, subfolder="transformer",
                                                                dtype=torch.float32, local_files_only=True)
        if c.mode == "lora":
            from peft import LoraConfig

            transformer.requires_grad_(False)
            transformer.to(self.weight_dtype)
            transformer.add_adapter(LoraConfig(r=c.lora_rank, lora_alpha=c.lora_alpha or c.lora_rank,
                                               lora_dropout=c.lora_dropout, init_lora_weights=True,
                                               target_modules=list(c.lora_target_modules)))
            if not any(p.requires_grad for p in transformer.parameters()):
                raise InputError(f"no transformer module matches the LoRA target modules {c.lora_target_modules}.")
            for parameter in transformer.parameters():  # the adapters train in float32 (the base stays low-precision)
                if parameter.requires_grad:
                    parameter.data = parameter.data.float()
            if self.resume_from is not None:
                self._load_lora(transformer, self.resume_from)
        else:
            transformer.requires_grad_(True)
        if c.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        transformer.train()
        params = [p for p in transformer.parameters() if p.requires_grad]
        self.trainable_parameters = sum(p.numel() for p in params)
        optimizer = torch.optim.AdamW(params, lr=c.effective_learning_rate, betas=(c.adam_beta1, c.adam_beta2),
                                      weight_decay=c.weight_decay, eps=c.adam_epsilon)
        name = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[c.lr_scheduler]
        # Stepped by hand once per optimizer step (not passed to accelerator.prepare, which would step it once per
        # process).
        self.lr_scheduler = get_scheduler(name, optimizer=optimizer, num_warmup_steps=c.lr_warmup_steps,
                                          num_training_steps=c.max_steps)
        self.transformer, self.optimizer = self.accelerator.prepare(transformer, optimizer)
        if self.resume_from is not None:
            state = torch.load(self.resume_from / wan_weights.TRAINING_STATE, map_location="cpu", weights_only=True)
            self.optimizer.load_state_dict(state["optimizer"])
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
            log(f"resumed from {self.resume_from} at step {self.start_step}")
        log(f"{c.mode} fine-tuning: {self.trainable_parameters:,} trainable parameters")

    @staticmethod
    def _load_lora(transformer, checkpoint: Path) -> None:
        from diffusers import WanPipeline
        from diffusers.utils import convert_unet_state_dict_to_peft
        from peft import set_peft_model_state_dict

        state_dict = WanPipeline.lora_state_dict(checkpoint, weight_name=wan_weights.LORA_WEIGHT_NAME)
        if isinstance(state_dict, tuple):
            state_dict = state_dict[0]
        state_dict = {k[len("transformer."):]: v for k, v in state_dict.items() if k.startswith("transformer.")}
        result = set_peft_model_state_dict(transformer, convert_unet_state_dict_to_peft(state_dict),
                                           adapter_name="default")
        unexpected = getattr(result, "unexpected_keys", None)
        if unexpected:
            raise InputError(f"the checkpoint's LoRA weights do not fit this model: {unexpected[:3]} ...")

    # ---- data ---------------------------------------------------------------------------------------------

    def _permutation(self, epoch: int) -> list[int]:
        import torch

        if epoch not in self._permutations:
            generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
            self._permutations = {epoch: torch.randperm(len(self.samples), generator=generator).tolist()}
        return self._permutations[epoch]

    def step_indices(self, step: int) -> list[int]:
        """The global batch of optimizer step ``step`` (1-based): consecutive positions of per-epoch shuffles."""
        n = len(self.samples)
        first = (step - 1) * self.config.batch_size
        out = []
        for position in range(first, first + self.config.batch_size):
            out.append(self._permutation(position // n)[position % n])
        return out

    def load_batch(self, indices: list[int], generator):
        import torch
        from safetensors.torch import load_file

        c = self.config
        latents, embeds = [], []
        drop = torch.rand(len(indices), generator=generator) < c.cfg_drop_rate
        for i, dropped in zip(indices, drop.tolist()):
            data = load_file(self.cache_paths[i])
            latents.append(data["latents"])
            embeds.append(self.empty_embeds if dropped else data["prompt_embeds"])
        padded = torch.zeros(len(indices), c.max_sequence_length, embeds[0].shape[-1], dtype=embeds[0].dtype)
        for row, embed in enumerate(embeds):
            padded[row, :embed.shape[0]] = embed[:c.max_sequence_length]
        return torch.stack(latents).float(), padded

    # ---- training -----------------------------------------------------------------------------------------

    def run(self) -> int:
        import torch
        import torch.nn.functional as F
        from safetensors.torch import load_file

        c, acc = self.config, self.accelerator
        if self.start_step >= c.max_steps:
            log(f"the latest checkpoint is at step {self.start_step}: nothing left to train (max_steps "
                f"{c.max_steps})")
            return 0
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self._trim_metrics(self.start_step)
        self.encode_dataset()
        self.empty_embeds = load_file(self._empty_prompt_path())["prompt_embeds"]
        self.build_model()
        log(f"training steps {self.start_step + 1}..{c.max_steps}: batch {c.batch_size} = {self.micro_batch} x "
            f"{acc.num_processes} process(es) x {c.gradient_accumulation_steps} accumulation step(s), "
            f"{len(self.samples)} clip(s), device {self.device}")
        last_saved = self.start_step
        loss_value = None
        for step in range(self.start_step + 1, c.max_steps + 1):
            started = time.perf_counter()
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats(self.device)
            generator = torch.Generator().manual_seed(
                (c.seed * 1_000_003 + step) * 1_009 + acc.process_index)
            indices = self.step_indices(step)
            span = self.micro_batch * c.gradient_accumulation_steps
            mine = indices[acc.process_index * span:(acc.process_index + 1) * span]
            total = torch.zeros((), device=self.device)
            for micro in range(c.gradient_accumulation_steps):
                batch = mine[micro * self.micro_batch:(micro + 1) * self.micro_batch]
                x0, text = self.load_batch(batch, generator)
                noise = torch.randn(x0.shape, generator=generator)
                sigma = sample_noise_levels(c, len(batch), generator)
                s = sigma.view(-1, 1, 1, 1, 1)
                noisy = ((1 - s) * x0 + s * noise).to(self.device)
                target = (noise - x0).to(self.device)
                timesteps = (sigma * 1000).to(self.device)
                text = text.to(self.device)
                with acc.accumulate(self.transformer):
                    with acc.autocast():
                        prediction = self.transformer(hidden_states=noisy, timestep=timesteps,
                                                      encoder_hidden_states=text, return_dict=False)[0]
                    loss = F.mse_loss(prediction.float(), target.float())
                    acc.backward(loss)
                    if acc.sync_gradients and c.max_grad_norm > 0:
                        acc.clip_grad_norm_(self.transformer.parameters(), c.max_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                total += loss.detach()
            lr = self.lr_scheduler.get_last_lr()[0]
            self.lr_scheduler.step()
            loss_value = acc.reduce(total / c.gradient_accumulation_steps, reduction="mean").item()
            if not math.isfinite(loss_value):
                log(f"the loss is {loss_value} at step {step}: stopping (no checkpoint of this state is written)")
                return 1
            memory = torch.cuda.max_memory_allocated(self.device) / 2 ** 20 if torch.cuda.is_available() else 0.0
            if acc.is_main_process:
                self._emit({"step": step, "loss": loss_value, "lr": lr,
                            "seconds": round(time.perf_counter() - started, 4), "gpu_memory_mb": round(memory, 1)})
            if step % c.save_every == 0 or step == c.max_steps:
                self.save_checkpoint(step, loss_value)
                last_saved = step
        acc.wait_for_everyone()
        log(f"done: step {c.max_steps}, last checkpoint at step {last_saved}")
        acc.end_training()
        return 0

    def _emit(self, metrics: dict) -> None:
        line = json.dumps(metrics)
        print(line, flush=True)
        with open(self.metrics_path, "a") as f:
            f.write(line + "\n")

    def _trim_metrics(self, step: int) -> None:
        """Drop the lines past ``step`` left by an interrupted run (they are trained again)."""
        if not self.metrics_path.is_file():
            return
        kept = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue
        temp = self.metrics_path.with_suffix(".jsonl.tmp")
        temp.write_text("".join(line + "\n" for line in kept))
        os.replace(temp, self.metrics_path)

    def save_checkpoint(self, step: int, loss: float) -> None:
        import shutil

        import torch

        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            folder = self.output_dir / wan_weights.CHECKPOINTS_DIR
            final = folder / f"{wan_weights.CHECKPOINT_PREFIX}{step:06d}"
            temp = folder / f".{final.name}.tmp"
            shutil.rmtree(temp, ignore_errors=True)
            temp.mkdir(parents=True)
            model = acc.unwrap_model(self.transformer)
            if self.config.mode == "lora":
                from diffusers import WanPipeline
                from peft.utils import get_peft_model_state_dict

                WanPipeline.save_lora_weights(
                    temp, transformer_lora_layers=get_peft_model_state_dict(model),
                    weight_name=wan_weights.LORA_WEIGHT_NAME,
                    transformer_lora_adapter_metadata=model.peft_config["default"].to_dict())
            else:
                model.save_pretrained(temp / "transformer", safe_serialization=True)
            torch.save({"optimizer": self.optimizer.state_dict(), "lr_scheduler": self.lr_scheduler.state_dict()},
                       temp / wan_weights.TRAINING_STATE)
            state = {"step": step, "mode": self.config.mode, "loss": loss, "weights": self.config.weights,
                     "config": self.config.to_dict(), "saved_at": time.time()}
            (temp / wan_weights.TRAINER_STATE).write_text(json.dumps(state, indent=2))
            if final.exists():
                shutil.rmtree(final)
            os.replace(temp, final)
            log(f"checkpoint {final}")
        acc.wait_for_everyone()


def sample_noise_levels(config: TrainConfig, count: int, generator):
    """``count`` flow-matching noise levels sigma in (0, 1): u drawn uniformly, logit-normally (sigmoid of a
    normal with ``logit_mean``/``logit_std``) or by SD3's "mode" density (``mode_scale``) - the formulas of diffusers'
    ``compute_density_for_timestep_sampling`` (not imported: diffusers.training_utils pulls in every model class,
    seconds of start-up) - then shifted like Wan's flow-matching schedulers: shift*u / (1 + (shift-1)*u)."""
    import torch

    if config.timestep_sampling == "logit_normal":
        u = torch.sigmoid(torch.normal(config.logit_mean, config.logit_std, size=(count,), generator=generator))
    elif config.timestep_sampling == "mode":
        u = torch.rand(count, generator=generator)
        u = 1 - u - config.mode_scale * (torch.cos(math.pi * u / 2) ** 2 - 1 + u)
    else:
        u = torch.rand(count, generator=generator)
    shift = config.flow_shift
    return shift * u / (1 + (shift - 1) * u)


def _save_atomic(save_file, tensors: dict, path: Path) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(temp))
    os.replace(temp, path)


def _quiet_libraries() -> None:
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args)
        samples = check_inputs(config)
        _quiet_libraries()
        return Trainer(config, samples, resume=args.resume).run()
    except InputError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
