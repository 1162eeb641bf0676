"""Local Wan2.1 weights directories and the trainer's checkpoints: checks (no torch import) and loading helpers.

A weights directory is the diffusers layout of Wan2.1-T2V (``model_index.json`` naming ``WanPipeline``, with
``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/`` and ``scheduler/``); everything is loaded with
``local_files_only=True``: nothing is ever downloaded.

A checkpoint is a directory ``<output_dir>/checkpoints/checkpoint-<step:06d>/`` written by the trainer::

    trainer_state.json                  {"step", "mode", "loss", "config", ...}; written last: its presence marks
                                        a complete checkpoint
    transformer/                        full fine-tuning: the transformer (config.json +
                                        diffusion_pytorch_model*.safetensors), loadable with from_pretrained
    pytorch_lora_weights.safetensors    LoRA: the adapter weights in diffusers' format (pipe.load_lora_weights)
    training_state.pt                   optimizer and learning-rate schedule state, for --resume
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

WEIGHTS_SUBFOLDERS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_PREFIX = "checkpoint-"
TRAINER_STATE = "trainer_state.json"
TRAINING_STATE = "training_state.pt"
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def weights_problems(path: str | os.PathLike) -> list[str]:
    """Why ``path`` is not a usable local Wan2.1 weights directory ([] when it is)."""
    if not str(path).strip():
        return ["no weights directory was given."]
    root = Path(path)
    if not root.is_dir():
        return [f"weights directory {str(root)!r} does not exist (weights are read from local paths only)."]
    index = root / "model_index.json"
    if not index.is_file():
        return [f"{str(root)!r} is not a diffusers weights directory: it has no model_index.json."]
    try:
        data = json.loads(index.read_text())
    except (OSError, ValueError) as error:
        return [f"{str(index)!r} cannot be read as JSON ({error})."]
    problems = []
    if not isinstance(data, dict) or data.get("_class_name") not in ("WanPipeline",):
        name = data.get("_class_name") if isinstance(data, dict) else None
        problems.append(f"{str(root)!r} holds a {name!r} pipeline, not a Wan2.1 text-to-video one (WanPipeline).")
    missing = [name for name in WEIGHTS_SUBFOLDERS if not (root / name).is_dir()]
    if missing:
        problems.append(f"{str(root)!r} lacks the folder(s) {', '.join(missing)}.")
    return problems


def checkpoint_step(path: str | os.PathLike) -> int | None:
    match = _CHECKPOINT_RE.match(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """The complete checkpoints of a training run, oldest first."""
    folder = Path(output_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = [(checkpoint_step(p), p) for p in folder.iterdir() if p.is_dir() and (p / TRAINER_STATE).is_file()]
    return [p for step, p in sorted((s, p) for s, p in found if s is not None)]


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def read_trainer_state(checkpoint: str | os.PathLike) -> dict:
    return json.loads((Path(checkpoint) / TRAINER_STATE).read_text())


def checkpoint_kind(checkpoint: str | os.PathLike) -> str | None:
    """``"full"``, ``"lora"`` or None when ``checkpoint`` is no checkpoint directory written by the trainer."""
    path = Path(checkpoint)
    if (path / LORA_WEIGHT_NAME).is_file():
        return "lora"
    if (path / "transformer" / "config.json").is_file():
        return "full"
    return None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint directory, or a training run's output directory (its latest checkpoint). Raises ``ValueError``
    with a sentence for people when there is none."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"checkpoint {str(path)!r} does not exist.")
    if checkpoint_kind(path) is None:
        latest = latest_checkpoint(path)
        if latest is None:
            raise ValueError(f"{str(path)!r} is neither a checkpoint (transformer/ or {LORA_WEIGHT_NAME}) nor a "
                             "training run directory with checkpoints.")
        path = latest
    return path
