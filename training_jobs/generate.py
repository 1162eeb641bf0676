"""Benchmark video generation with Wan2.1 text-to-video: a base model, optionally with a trainer checkpoint (full
weights or a LoRA adapter), one video per task. No Django import.

    python -m training_jobs.generate --weights DIR [--checkpoint CKPT] --prompts TASKS.json --out DIR \\
        [--model-name NAME] [--steps 50] [--guidance 5.0] [--height 480] [--width 832] [--frames 81] [--seed 42]

``TASKS.json`` is a JSON list of ``{"index", "prompt"}``; each video is written to ``<out>/<ModelName>/<index>.mp4``
(H.264, yuv420p, through ffmpeg; written under a temporary name and renamed, so a file there is whole). A video that
already exists with the right number of frames is kept, so an interrupted run continues where it stopped. Every task
uses the same seed (the paper's fixed seed): a task's video does not depend on the order of the tasks.

``--checkpoint`` takes a checkpoint directory or a training run's output directory (its latest checkpoint). The
default model name is ``<run directory>-step<N>`` for a checkpoint and the weights directory's name otherwise.

stdout carries one JSON line per video: ``{"index", "video", "done", "total", "seconds", "skipped"}``; messages for
people go to stderr. Exit status: 0 done; 2 bad input (message on stderr); 1 anything unexpected.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from training_jobs.wan import weights as wan_weights
from training_jobs.wan.config import GenerateConfig, validate

EXIT_BAD_INPUT = 2
_INDEX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class InputError(Exception):
    pass


def log(message: str) -> None:
    print(f"[generate] {message}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    d = GenerateConfig()
    p = argparse.ArgumentParser(prog="python -m training_jobs.generate",
                                description="Generate one Wan2.1 video per benchmark task.")
    p.add_argument("--config", help="JSON file of GenerateConfig settings (flags override it)")
    p.add_argument("--weights", help="base weights directory (diffusers layout)")
    p.add_argument("--checkpoint", help="trainer checkpoint or training run directory (default: the base model)")
    p.add_argument("--prompts", help="JSON list of {index, prompt}")
    p.add_argument("--out", "--output-dir", dest="output_dir", help="videos go to OUT/<ModelName>/<index>.mp4")
    p.add_argument("--model-name", help="folder name of this model's videos")
    p.add_argument("--steps", type=int, help=f"sampling steps (default {d.steps})")
    p.add_argument("--guidance", type=float, help=f"classifier-free guidance scale (default {d.guidance})")
    p.add_argument("--height", type=int, help=f"default {d.height}")
    p.add_argument("--width", type=int, help=f"default {d.width}")
    p.add_argument("--frames", "--num-frames", dest="num_frames", type=int, help=f"4k+1 (default {d.num_frames})")
    p.add_argument("--seed", type=int, help=f"default {d.seed}")
    p.add_argument("--fps", type=float, help=f"frame rate of the files (default {d.fps})")
    p.add_argument("--negative-prompt", help="default: none")
    p.add_argument("--max-sequence-length", type=int, help=f"default {d.max_sequence_length}")
    p.add_argument("--mixed-precision", choices=("bf16", "fp16", "no"), help="model dtype on a GPU (default bf16)")
    return p


def load_config(args: argparse.Namespace) -> GenerateConfig:
    data: dict = {}
    if args.config:
        path = Path(args.config)
        try:
            data = json.loads(path.read_text())
        except OSError:
            raise InputError(f"config file {str(path)!r} cannot be read.") from None
        except ValueError as error:
            raise InputError(f"config file {str(path)!r} is not valid JSON ({error}).") from None
        if not isinstance(data, dict):
            raise InputError(f"config file {str(path)!r} must hold a JSON object of settings.")
    for key, value in vars(args).items():
        if key != "config" and value is not None:
            data[key] = value
    try:
        return GenerateConfig.from_dict(data)
    except (TypeError, ValueError) as error:
        raise InputError(str(error)) from None


def load_tasks(path: str) -> list[tuple[str, str]]:
    if not path:
        raise InputError("no prompts file was given (--prompts).")
    file = Path(path)
    if not file.is_file():
        raise InputError(f"prompts file {str(file)!r} does not exist.")
    try:
        entries = json.loads(file.read_text())
    except ValueError as error:
        raise InputError(f"prompts file {str(file)!r} is not valid JSON ({error}).") from None
    if not isinstance(entries, list) or not entries:
        raise InputError(f"prompts file {str(file)!r} must be a non-empty JSON list of {{index, prompt}}.")
    tasks, seen = [], set()
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("prompt"), str) or not entry["prompt"].strip():
            raise InputError(f"prompts entry {number} must have a non-empty string prompt.")
        index = entry.get("index")
        if isinstance(index, bool) or not isinstance(index, (int, str)) or not _INDEX_RE.match(str(index)):
            raise InputError(f"prompts entry {number} has index {index!r}: it must be a number or a simple name "
                             "(letters, digits, '-', '_', '.').")
        if str(index) in seen:
            raise InputError(f"index {index!r} appears more than once in the prompts file.")
        seen.add(str(index))
        tasks.append((str(index), entry["prompt"]))
    return tasks


def default_model_name(config: GenerateConfig, checkpoint: Path | None) -> str:
    if config.model_name:
        return config.model_name
    if checkpoint is not None:
        step = wan_weights.checkpoint_step(checkpoint)
        run = checkpoint.parent.parent.name if checkpoint.parent.name == wan_weights.CHECKPOINTS_DIR else ""
        if step is not None and run:
            return f"{run}-step{step}"
        return checkpoint.name
    return Path(config.weights).resolve().name


def check_inputs(config: GenerateConfig) -> tuple[Path | None, list[tuple[str, str]]]:
    problems = validate(config) + wan_weights.weights_problems(config.weights)
    if not config.output_dir:
        problems.append("no output directory was given (--out).")
    if problems:
        raise InputError("\n  ".join(["the settings cannot run:", *problems]))
    checkpoint = None
    if config.checkpoint:
        try:
            checkpoint = wan_weights.resolve_checkpoint(config.checkpoint)
        except ValueError as error:
            raise InputError(str(error)) from None
    return checkpoint, load_tasks(config.prompts)


def load_pipeline(config: GenerateConfig, checkpoint: Path | None):
    """WanPipeline from the local weights (+ the checkpoint's transformer or LoRA adapter), on the GPU if any."""
    import torch
    from diffusers import WanPipeline, WanTransformer3DModel

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float32
    if device.type == "cuda":
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.mixed_precision, torch.float32)
    kind = wan_weights.checkpoint_kind(checkpoint) if checkpoint is not None else None
    extra = {}
    if kind == "full":
        extra["transformer"] = WanTransformer3DModel.from_pretrained(checkpoint / "transformer", dtype=dtype,
                                                                     local_files_only=True)
    pipe = WanPipeline.from_pretrained(config.weights, dtype=dtype, local_files_only=True, **extra)
    pipe.vae.to(torch.float32)  # Wan's VAE decodes in float32 (as diffusers' Wan examples load it)
    if kind == "lora":
        pipe.load_lora_weights(str(checkpoint), weight_name=wan_weights.LORA_WEIGHT_NAME, adapter_name="finetune")
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe, device


def write_video(frames, path: Path, fps: float) -> None:
    """Frames (F, H, W, 3) float RGB in [0, 1] to an H.264 MP4 at ``path`` (temporary name, then renamed)."""
    import numpy as np

    from datasets.video_io import write_frames

    array = (np.clip(np.asarray(frames), 0.0, 1.0) * 255).round().astype(np.uint8)[..., ::-1]  # RGB -> BGR
    write_frames(array, path, fps)


def _complete(path: Path, frames: int) -> bool:
    from datasets.video_io import UnreadableVideo, probe

    if not path.is_file():
        return False
    try:
        return probe(path).frame_count == frames
    except UnreadableVideo:
        return False


def run(config: GenerateConfig, checkpoint: Path | None, tasks: list[tuple[str, str]]) -> int:
    import torch

    model_name = default_model_name(config, checkpoint)
    folder = Path(config.output_dir) / model_name
    folder.mkdir(parents=True, exist_ok=True)
    todo = [(i, p) for i, p in tasks if not _complete(folder / f"{i}.mp4", config.num_frames)]
    pipe = device = None
    if todo:
        pipe, device = load_pipeline(config, checkpoint)
        log(f"{model_name}: {len(todo)} of {len(tasks)} video(s) to generate on {device} "
            f"({config.width}x{config.height}, {config.num_frames} frames, {config.steps} steps, "
            f"guidance {config.guidance}, seed {config.seed})")
    done = 0
    for index, prompt in tasks:
        path = folder / f"{index}.mp4"
        started = time.perf_counter()
        skipped = (index, prompt) not in todo
        if not skipped:
            generator = torch.Generator(device="cpu").manual_seed(config.seed)
            frames = pipe(prompt=prompt, negative_prompt=config.negative_prompt or None, height=config.height,
                          width=config.width, num_frames=config.num_frames, num_inference_steps=config.steps,
                          guidance_scale=config.guidance, generator=generator,
                          max_sequence_length=config.max_sequence_length, output_type="np").frames[0]
            write_video(frames, path, config.fps)
        done += 1
        print(json.dumps({"index": index, "video": str(path), "done": done, "total": len(tasks),
                          "seconds": round(time.perf_counter() - started, 3), "skipped": skipped}), flush=True)
    log(f"done: {len(tasks)} video(s) in {folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args)
        checkpoint, tasks = check_inputs(config)
        from training_jobs.train import _quiet_libraries

        _quiet_libraries()
        return run(config, checkpoint, tasks)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
