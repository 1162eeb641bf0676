"""The pipeline's classify stage: a VideoMAE video classifier that scores how likely a clip is a micro-scale simulation.

Plain Python (no Django). Models are read from LOCAL directories only (``local_files_only=True``); nothing is ever
downloaded. With no model configured (``PIPELINE["CLASSIFIER_DIR"] == ""``) :func:`classifier_from_settings` returns
``None`` and clips stay unclassified: there is never a fake result.

A model directory is what ``VideoMAEForVideoClassification.save_pretrained`` writes (``config.json`` with
``"model_type": "videomae"`` and the weights, ``model.safetensors`` or ``pytorch_model.bin``), optionally with the
``preprocessor_config.json`` of its image processor.

Preprocessing (:func:`preprocess_frames`), done with numpy/torch only (no torchvision, no PIL), as VideoMAE's image
processor does it:

1. sample ``config.num_frames`` frames evenly over the given ones (frames repeat when there are fewer);
2. BGR (OpenCV) -> RGB;
3. resize (bilinear, antialiased) so the shortest edge is ``size.shortest_edge``, or to ``size.height x size.width``;
4. centre-crop to ``crop_size``;
5. scale to [0, 1] (``rescale_factor``, 1/255) and normalise with ``image_mean``/``image_std``;
6. shape ``(1, T, C, H, W)``.

The numbers come from ``preprocessor_config.json`` when the directory has one; without one, the shortest edge and
the crop are ``config.image_size`` and mean/std are ImageNet's (0.485, 0.456, 0.406)/(0.229, 0.224, 0.225), as in
the published VideoMAE checkpoints.

Which output is "micro": the label in ``config.id2label`` whose name, lower-cased with ``_`` and spaces read as
``-``, is one of :data:`MICRO_LABEL_NAMES` (``micro``, ``micro-simulation``, ``microscale``...); if no label has
such a name, index 1 (the positive class of a two-label ``("non-micro", "micro")`` model). ``p(micro)`` is the
softmax probability of that output.

torch and transformers are imported lazily, so this module imports without them; loading a model without them
raises :class:`ClassifierUnavailable`.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = [
    "MICRO_LABEL_NAMES",
    "Classifier",
    "ClassifierUnavailable",
    "PreprocessConfig",
    "build_tiny_videomae",
    "classifier_from_settings",
    "load_classifier",
    "model_version",
    "preprocess_frames",
    "train_classifier",
]

MICRO_LABEL_NAMES = frozenset({
    "micro", "microscale", "micro-scale", "micro-simulation", "microsimulation", "micro-scale-simulation",
    "microscale-simulation", "micro-sim", "microsim",
})
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
VERSION_MAX_LENGTH = 80  # Clip.classifier_version's max_length


class ClassifierUnavailable(Exception):
    """No usable classifier: a missing directory, not a VideoMAE model, no trained head, or torch/transformers not
    installed. The message says which and where."""


def _import_ml():
    try:
        import torch
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ClassifierUnavailable(
            f"The classifier needs torch and transformers ({exc}); install them with "
            "`pip install -r requirements-ml.txt`."
        ) from exc
    return torch, transformers


# --- preprocessing ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreprocessConfig:
    num_frames: int
    shortest_edge: int | None  # resize so the shortest edge is this, keeping the aspect ratio...
    resize_hw: tuple[int, int] | None  # ...or to exactly (height, width)
    crop_hw: tuple[int, int] | None
    rescale_factor: float = 1 / 255
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def from_model_dir(cls, model_dir: Path, config: dict[str, Any]) -> "PreprocessConfig":
        """From the model's ``config.json`` (a dict) and, when present, its ``preprocessor_config.json``."""
        image_size = _pair(config.get("image_size", 224))
        num_frames = int(config.get("num_frames", 16))
        proc: dict[str, Any] = {}
        for name in PROCESSOR_FILES:
            path = model_dir / name
            if path.is_file():
                try:
                    proc = json.loads(path.read_text())
                except (OSError, ValueError) as exc:
                    raise ClassifierUnavailable(f"{path} is not readable JSON: {exc}") from exc
                break
        shortest_edge, resize_hw = min(image_size), None
        if proc.get("do_resize", True) and isinstance(proc.get("size"), dict):
            size = proc["size"]
            if "shortest_edge" in size:
                shortest_edge = int(size["shortest_edge"])
            elif "height" in size and "width" in size:
                shortest_edge, resize_hw = None, (int(size["height"]), int(size["width"]))
        elif proc and not proc.get("do_resize", True):
            shortest_edge = None
        crop_hw: tuple[int, int] | None = image_size
        if proc and not proc.get("do_center_crop", True):
            crop_hw = None
        elif isinstance(proc.get("crop_size"), dict):
            crop_hw = (int(proc["crop_size"]["height"]), int(proc["crop_size"]["width"]))
        rescale = float(proc.get("rescale_factor", 1 / 255)) if proc.get("do_rescale", True) else 1.0
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        if proc and not proc.get("do_normalize", True):
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        else:
            mean = tuple(float(v) for v in proc.get("image_mean", mean))
            std = tuple(float(v) for v in proc.get("image_std", std))
        return cls(num_frames=num_frames, shortest_edge=shortest_edge, resize_hw=resize_hw, crop_hw=crop_hw,
                   rescale_factor=rescale, mean=mean, std=std)


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def sample_indices(count: int, num_frames: int) -> list[int]:
    """``num_frames`` indices spread evenly over ``range(count)``, first and last included (repeats when short)."""
    if count <= 0:
        raise ValueError("no frames to classify")
    if num_frames == 1:
        return [count // 2]
    return [int(round(i)) for i in np.linspace(0, count - 1, num_frames)]


def preprocess_frames(frames: Sequence[np.ndarray], pre: PreprocessConfig):
    """BGR frames (H, W, 3), uint8 0-255 -> a float32 tensor (1, T, C, H, W) ready for VideoMAE."""
    torch, _ = _import_ml()
    import torch.nn.functional as F

    frames = list(frames)
    picked = []
    for i in sample_indices(len(frames), pre.num_frames):
        frame = np.asarray(frames[i])
        if frame.ndim == 2:
            frame = np.repeat(frame[:, :, None], 3, axis=2)
        if frame.ndim != 3 or frame.shape[2] not in (3, 4):
            raise ValueError(f"expected BGR frames of shape (H, W, 3), got {frame.shape}")
        picked.append(frame[:, :, 2::-1])  # BGR(A) -> RGB
    shapes = {f.shape for f in picked}
    if len(shapes) != 1:
        raise ValueError(f"frames differ in size: {sorted(shapes)}")
    video = torch.from_numpy(np.ascontiguousarray(np.stack(picked))).to(torch.float32)  # T, H, W, C
    video = video.permute(0, 3, 1, 2)  # T, C, H, W
    h, w = video.shape[-2:]
    target = None
    if pre.resize_hw is not None:
        target = pre.resize_hw
    elif pre.shortest_edge is not None:
        short = pre.shortest_edge
        target = (short, max(1, int(w * short / h))) if h <= w else (max(1, int(h * short / w)), short)
    if target is not None and tuple(target) != (h, w):
        video = F.interpolate(video, size=target, mode="bilinear", align_corners=False, antialias=True)
    if pre.crop_hw is not None:
        video = _center_crop(video, pre.crop_hw)
    video = video * pre.rescale_factor
    mean = torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1)
    video = (video - mean) / std
    return video.unsqueeze(0).contiguous()


def _center_crop(video, crop_hw: tuple[int, int]):
    import torch.nn.functional as F

    ch, cw = crop_hw
    h, w = video.shape[-2:]
    if h < ch or w < cw:  # pad with zeros like the image processor, then crop
        pad_h, pad_w = max(0, ch - h), max(0, cw - w)
        video = F.pad(video, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        h, w = video.shape[-2:]
    top, left = (h - ch) // 2, (w - cw) // 2
    return video[..., top:top + ch, left:left + cw]


# --- the classifier --------------------------------------------------------------------------------------------


def micro_index(id2label: dict[Any, str]) -> int:
    """The output index of the "micro" class: a label named like :data:`MICRO_LABEL_NAMES`, else 1."""
    for index, name in sorted(((int(k), v) for k, v in id2label.items())):
        if str(name).strip().lower().replace("_", "-").replace(" ", "-") in MICRO_LABEL_NAMES:
            return index
    return 1


def model_version(model_dir: str | Path) -> str:
    """``<dir name>@<12 hex digits>``: a SHA-256 over config.json, the processor config and the weight files."""
    model_dir = Path(model_dir)
    digest = hashlib.sha256()
    files = [model_dir / "config.json"] + [model_dir / n for n in PROCESSOR_FILES]
    files += sorted(p for p in model_dir.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    for path in files:
        if not path.is_file():
            continue
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    suffix = "@" + digest.hexdigest()[:12]
    return model_dir.resolve().name[: VERSION_MAX_LENGTH - len(suffix)] + suffix


@dataclass
class Classifier:
    """A loaded VideoMAE classifier. ``predict(frames) -> p(micro)``; ``version`` identifies model and weights."""

    model: Any
    preprocess: PreprocessConfig
    micro_index: int
    version: str
    model_dir: Path
    device: Any = field(default="cpu")

    @property
    def num_frames(self) -> int:
        return self.preprocess.num_frames

    def pixel_values(self, frames: Sequence[np.ndarray]):
        return preprocess_frames(frames, self.preprocess)

    def predict(self, frames: Sequence[np.ndarray]) -> float:
        """p(micro) in [0, 1] for one clip given as BGR frames (H, W, 3) uint8, in order."""
        torch, _ = _import_ml()
        pixel_values = self.pixel_values(frames).to(self.device)
        with torch.inference_mode():
            logits = self.model(pixel_values=pixel_values).logits
            probs = torch.softmax(logits.float(), dim=-1)[0]
        return float(probs[self.micro_index].item())


def _read_videomae_config(model_dir: Path) -> dict[str, Any]:
    if not str(model_dir).strip():
        raise ClassifierUnavailable("No classifier directory given.")
    if not model_dir.exists():
        raise ClassifierUnavailable(f"Classifier directory {model_dir} does not exist.")
    if not model_dir.is_dir():
        raise ClassifierUnavailable(f"Classifier path {model_dir} is not a directory.")
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ClassifierUnavailable(f"Classifier directory {model_dir} has no config.json (not a saved model).")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise ClassifierUnavailable(f"{config_path} is not readable JSON: {exc}") from exc
    if not isinstance(config, dict) or config.get("model_type") != "videomae":
        found = config.get("model_type") if isinstance(config, dict) else type(config).__name__
        raise ClassifierUnavailable(
            f"{config_path} is not a VideoMAE config (model_type {found!r}, expected 'videomae')."
        )
    if not any(p.name.endswith(WEIGHT_SUFFIXES) for p in model_dir.iterdir()):
        raise ClassifierUnavailable(f"Classifier directory {model_dir} has no weights (*.safetensors or *.bin).")
    return config


def load_classifier(model_dir: str | Path, *, device: str | None = None) -> Classifier:
    """Load a fine-tuned ``VideoMAEForVideoClassification`` from a LOCAL directory (never a hub).

    ``device``: ``None`` for CUDA when available, else CPU. Raises :class:`ClassifierUnavailable` with the reason.
    """
    model_dir = Path(model_dir).expanduser()
    config = _read_videomae_config(model_dir)
    torch, transformers = _import_ml()
    from transformers import VideoMAEForVideoClassification

    num_labels = len(config.get("id2label") or {}) or 2
    if num_labels < 2:
        raise ClassifierUnavailable(f"{model_dir} has {num_labels} label(s); a classifier needs at least 2.")
    try:
        model, info = VideoMAEForVideoClassification.from_pretrained(
            str(model_dir), local_files_only=True, output_loading_info=True,
        )
    except Exception as exc:  # OSError, ValueError, safetensors errors...: all mean "not loadable"
        raise ClassifierUnavailable(f"Could not load a VideoMAE classifier from {model_dir}: {exc}") from exc
    missing = [k for k in info.get("missing_keys", ()) if "classifier" in k or "fc_norm" in k]
    if missing:
        # A pre-training checkpoint (no classification head): the head would be random, i.e. a fake result.
        raise ClassifierUnavailable(
            f"{model_dir} has no trained classification head (missing {', '.join(sorted(missing))}); "
            "fine-tune it first."
        )
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    return Classifier(
        model=model,
        preprocess=PreprocessConfig.from_model_dir(model_dir, config),
        micro_index=micro_index(model.config.id2label),
        version=model_version(model_dir),
        model_dir=model_dir,
        device=device,
    )


def classifier_from_settings(model_dir: str) -> Classifier | None:
    """The classifier of ``PIPELINE["CLASSIFIER_DIR"]``; ``None`` when it is empty (clips stay unclassified).

    A configured but unusable directory raises :class:`ClassifierUnavailable` (a misconfiguration must be seen,
    not silently turned into "unclassified").
    """
    if not (model_dir or "").strip():
        return None
    return load_classifier(model_dir.strip())


# --- tiny models and training ----------------------------------------------------------------------------------


def build_tiny_videomae(path: str | Path, *, image_size: int = 32, num_frames: int = 4,
                        labels: Sequence[str] = ("non-micro", "micro"), seed: int = 0) -> Path:
    """Build, randomly initialise (seeded) and save a tiny ``VideoMAEForVideoClassification`` to ``path``.

    Patch 8, tubelet 2, hidden 32, 2 layers, 2 heads: for tests and as a starting point when no pretrained
    weights are at hand. Returns the directory.
    """
    torch, _ = _import_ml()
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    labels = list(labels)
    config = VideoMAEConfig(
        image_size=image_size, patch_size=8, num_channels=3, num_frames=num_frames, tubelet_size=2,
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)},
        problem_type="single_label_classification",
    )
    torch.manual_seed(seed)
    model = VideoMAEForVideoClassification(config)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    return path


def _label_index(label: Any, label2id: dict[str, int], micro: int, num_labels: int) -> int:
    if isinstance(label, (bool, np.bool_)):
        if num_labels != 2:
            raise ValueError("boolean labels (is micro) need a two-label model")
        return micro if label else 1 - micro
    if isinstance(label, str):
        if label not in label2id:
            raise ValueError(f"unknown label {label!r}; the model's labels are {sorted(label2id)}")
        return int(label2id[label])
    index = int(label)
    if not 0 <= index < num_labels:
        raise ValueError(f"label index {index} out of range 0..{num_labels - 1}")
    return index


def train_classifier(*, model_dir: str | Path, clips: Iterable[tuple[Sequence[np.ndarray], Any]],
                     out_dir: str | Path, epochs: int = 3, lr: float = 5e-5, seed: int = 0,
                     batch_size: int = 8, weight_decay: float = 0.01, device: str | None = None) -> dict[str, Any]:
    """Fine-tune the VideoMAE classifier in ``model_dir`` on ``clips`` and save it to ``out_dir``.

    ``clips``: ``(frames, label)`` pairs; frames are BGR (H, W, 3) uint8 as for :meth:`Classifier.predict`
    (same preprocessing), a label is a label name, a class index, or a bool (True: the micro class).
    AdamW (lr 5e-5 by default, as in the VideoMAE paper's fine-tuning), cross-entropy, shuffled mini-batches
    (seeded). Returns ``{"epoch_losses": [mean loss per epoch], "num_clips", "epochs", "lr", "out_dir",
    "version"}``; ``out_dir`` then loads with :func:`load_classifier`.
    """
    model_dir, out_dir = Path(model_dir).expanduser(), Path(out_dir).expanduser()
    config = _read_videomae_config(model_dir)
    torch, _ = _import_ml()
    import torch.nn.functional as F
    from transformers import VideoMAEForVideoClassification

    if epochs < 1:
        raise ValueError("epochs must be at least 1")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    try:
        model = VideoMAEForVideoClassification.from_pretrained(str(model_dir), local_files_only=True)
    except Exception as exc:
        raise ClassifierUnavailable(f"Could not load a VideoMAE model from {model_dir}: {exc}") from exc
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    pre = PreprocessConfig.from_model_dir(model_dir, config)
    num_labels = int(model.config.num_labels)
    micro = micro_index(model.config.id2label)
    label2id = {str(k): int(v) for k, v in (model.config.label2id or {}).items()}

    inputs, targets = [], []
    for frames, label in clips:
        inputs.append(preprocess_frames(frames, pre)[0])
        targets.append(_label_index(label, label2id, micro, num_labels))
    if not inputs:
        raise ValueError("no clips to train on")
    x_all = torch.stack(inputs)
    y_all = torch.tensor(targets, dtype=torch.long)

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    epoch_losses = []
    model.train()
    for _ in range(epochs):
        order = list(range(len(inputs)))
        rng.shuffle(order)
        total, seen = 0.0, 0
        for start in range(0, len(order), batch_size):
            idx = torch.tensor(order[start:start + batch_size])
            x, y = x_all[idx].to(device), y_all[idx].to(device)
            logits = model(pixel_values=x).logits
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.item()) * len(idx)
            seen += len(idx)
        epoch_losses.append(total / seen)
    model.eval()

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    for name in PROCESSOR_FILES:  # the preprocessing travels with the weights
        if (model_dir / name).is_file() and model_dir.resolve() != out_dir.resolve():
            (out_dir / name).write_bytes((model_dir / name).read_bytes())
    return {
        "epoch_losses": epoch_losses,
        "num_clips": len(inputs),
        "epochs": epochs,
        "lr": lr,
        "out_dir": str(out_dir),
        "version": model_version(out_dir),
    }
