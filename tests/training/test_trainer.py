"""The Wan2.1 trainer (training_jobs/train.py) and generator (training_jobs/generate.py) on a real tiny Wan.

The model is a real diffusers WanTransformer3DModel + AutoencoderKLWan + transformers UMT5EncoderModel with a
tokenizer trained here (``build_tiny_wan``), saved as a weights directory and loaded through the same
``from_pretrained(..., local_files_only=True)`` code as the real Wan2.1-T2V-1.3B weights; the snapshot is three
32x32 9-frame clips written with ffmpeg. Nothing is mocked and nothing is downloaded.

The main training run goes through the real entry point in a subprocess (``python -m training_jobs.train``),
started as soon as the tiny model exists and collected by the tests that need it, so that it runs while the
in-process tests (LoRA, generation, config) do. Losses differ slightly between machines: the tests assert a
decrease and exact resumption on the same machine, never a value.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")
pytest.importorskip("accelerate")

from datasets.video_io import make_test_video, probe  # noqa: E402
from training_jobs import generate, train  # noqa: E402
from training_jobs.wan import weights as wan_weights  # noqa: E402
from training_jobs.wan.config import GenerateConfig, TrainConfig, validate  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ("a doctor performing a checkup in a clinic", "bacteria dividing under a microscope",
           "a nurse giving a vaccine injection")
TINY = ["--num-frames", "5", "--height", "32", "--width", "32", "--mixed-precision", "no",
        "--max-sequence-length", "16", "--seed", "0"]
FULL_STEPS = 30
METRIC_KEYS = {"step", "loss", "lr", "seconds", "gpu_memory_mb"}


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def run_module(module: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


def metrics_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread on a busy 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_wan(tmp_path_factory) -> Path:
    from training_jobs.wan.tiny import build_tiny_wan

    return build_tiny_wan(tmp_path_factory.mktemp("weights") / "Wan2.1-T2V-tiny", seed=0)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    """A snapshot manifest with three 9-frame 32x32 clips: a white square moving over a different colour each."""
    root = tmp_path_factory.mktemp("snapshot")
    entries = []
    for k, prompt in enumerate(PROMPTS):
        def draw(i, w, h, k=k):
            frame = np.zeros((h, w, 3), np.uint8)
            frame[:] = (40 + 70 * k, 90, 200 - 60 * k)
            x = (3 * i + 7 * k) % (w - 8)
            frame[8:16, x:x + 8] = 255
            return frame
        make_test_video(root / "videos" / f"clip{k}.mp4", frames=9, size=(32, 32), fps=8, draw=draw)
        entries.append({"id": f"clip{k}", "video": f"videos/clip{k}.mp4", "prompt": prompt})
    manifest = root / "train_metadata.json"
    manifest.write_text(json.dumps(entries))
    return manifest


class FullRun:
    """The main training run: ``python -m training_jobs.train`` in a subprocess, full fine-tuning, 30 steps at
    lr 1e-3, batch 1, a checkpoint every 10 steps, gradient checkpointing on (the default)."""

    def __init__(self, weights: Path, manifest: Path, out: Path):
        self.out = out
        self.process = subprocess.Popen(
            [sys.executable, "-m", "training_jobs.train", "--weights", str(weights), "--manifest", str(manifest),
             "--out", str(out), "--steps", str(FULL_STEPS), "--lr", "1e-3", "--batch-size", "1",
             "--save-every", "10", *TINY],
            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._result = None

    def result(self) -> tuple[int, str, str]:
        if self._result is None:
            stdout, stderr = self.process.communicate(timeout=300)
            self._result = (self.process.returncode, stdout, stderr)
        return self._result


@pytest.fixture(scope="module")
def full_run(tiny_wan, snapshot, tmp_path_factory):
    run = FullRun(tiny_wan, snapshot, tmp_path_factory.mktemp("runs") / "full")
    yield run
    if run.process.poll() is None:
        run.process.kill()
        run.process.wait()


@pytest.fixture
def finished_run(full_run):
    code, stdout, stderr = full_run.result()
    assert code == 0, stderr[-3000:]
    return full_run


# ------------------------------------------------------------------------------------------- the tiny model


def test_tiny_wan_loads_through_wan_pipeline_and_generates(tiny_wan, full_run):
    import torch
    from diffusers import UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5EncoderModel

    assert wan_weights.weights_problems(tiny_wan) == []
    for name in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (tiny_wan / name).is_dir()
    assert list((tiny_wan / "transformer").glob("*.safetensors"))
    pipe = WanPipeline.from_pretrained(tiny_wan, local_files_only=True)
    assert isinstance(pipe.transformer, WanTransformer3DModel)
    assert isinstance(pipe.text_encoder, UMT5EncoderModel)
    assert isinstance(pipe.scheduler, UniPCMultistepScheduler)
    ids = pipe.tokenizer("a doctor in a clinic").input_ids
    assert ids[-1] == pipe.tokenizer.eos_token_id and pipe.tokenizer.unk_token_id not in ids
    pipe.set_progress_bar_config(disable=True)
    video = pipe("a doctor", num_frames=5, height=32, width=32, num_inference_steps=2, max_sequence_length=16,
                 generator=torch.Generator().manual_seed(0), output_type="np").frames[0]
    assert video.shape == (5, 32, 32, 3)


# ------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("change, message", [
    ({"manifest": "missing.json"}, "does not exist"),
    ({"num_frames": 8}, "num_frames 8 is not of the form 4k+1"),
    ({"height": 30}, "height 30 is not a multiple of 16"),
    ({"width": 40}, "width 40 is not a multiple of 16"),
    ({"weights": "/nonexistent/Wan2.1-T2V-1.3B"}, "weights directory '/nonexistent/Wan2.1-T2V-1.3B' does not exist"),
    ({"learning_rate": 0}, "learning rate must be positive"),
    ({"batch_size": 0}, "batch size must be at least 1"),
])
def test_bad_training_input_exits_non_zero_with_the_reason(tiny_wan, snapshot, tmp_path, capsys, change, message):
    """Refused before any model is loaded: exit status 2, the reason on stderr, nothing on stdout."""
    config = TrainConfig(weights=str(tiny_wan), manifest=str(snapshot), output_dir=str(tmp_path / "out"),
                         height=32, width=32, num_frames=5, max_steps=2, mixed_precision="no")
    data = config.to_dict()
    for key, value in change.items():
        data[key] = str(tmp_path / value) if key == "manifest" else value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    assert train.main(["--config", str(path)]) == train.EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert "error:" in captured.err and message in captured.err
    assert captured.out == ""
    assert not (tmp_path / "out").exists()


def test_bad_input_is_the_process_exit_status(tmp_path, tiny_wan):
    result = run_module("training_jobs.train", "--weights", str(tiny_wan), "--manifest", str(tmp_path / "no.json"),
                        "--out", str(tmp_path / "out"), "--num-frames", "8", timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert "num_frames 8 is not of the form 4k+1" in result.stderr


def test_bad_manifest_entries_and_missing_videos_are_refused(tmp_path, tiny_wan, capsys):
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps([{"id": "a", "video": "videos/a.mp4", "prompt": "x"}]))
    assert train.main(["--weights", str(tiny_wan), "--manifest", str(manifest), "--out", str(tmp_path / "out"),
                       *TINY]) == 2
    assert "1 video(s) of the manifest do not exist" in capsys.readouterr().err
    manifest.write_text(json.dumps([{"id": "a", "video": "a.mp4"}]))
    with pytest.raises(train.InputError, match="non-empty string fields id, video and prompt"):
        train.load_manifest(str(manifest))
    manifest.write_text("{not json")
    with pytest.raises(train.InputError, match="not valid JSON"):
        train.load_manifest(str(manifest))


def test_bad_generation_input_exits_non_zero(tiny_wan, tmp_path, capsys):
    prompts = tmp_path / "tasks.json"
    prompts.write_text(json.dumps([{"index": 1, "prompt": "a cell"}]))
    assert generate.main(["--weights", str(tiny_wan), "--prompts", str(prompts), "--out", str(tmp_path / "videos"),
                          "--frames", "6", "--height", "32", "--width", "32"]) == generate.EXIT_BAD_INPUT
    assert "num_frames 6 is not of the form 4k+1" in capsys.readouterr().err
    assert generate.main(["--weights", str(tmp_path / "nope"), "--prompts", str(prompts),
                          "--out", str(tmp_path / "videos")]) == 2
    assert "does not exist" in capsys.readouterr().err
    prompts.write_text(json.dumps([{"index": "../x", "prompt": "a cell"}]))
    assert generate.main(["--weights", str(tiny_wan), "--prompts", str(prompts), "--out", str(tmp_path / "videos"),
                          "--frames", "5", "--height", "32", "--width", "32"]) == 2
    assert "index '../x'" in capsys.readouterr().err
    result = run_module("training_jobs.generate", "--weights", str(tiny_wan), "--prompts", str(tmp_path / "none"),
                        "--out", str(tmp_path / "videos"), timeout=60)
    assert result.returncode == 2 and "prompts file" in result.stderr and "does not exist" in result.stderr
    assert not (tmp_path / "videos").exists()


# ------------------------------------------------------------------------------------------- LoRA


@pytest.mark.slow
def test_lora_trains_only_the_adapter_and_generates_with_it(tiny_wan, snapshot, tmp_path, capsys):
    from safetensors.torch import load_file

    base_before = load_file(tiny_wan / "transformer" / "diffusion_pytorch_model.safetensors")
    out = tmp_path / "lora-run"
    code = train.main(["--weights", str(tiny_wan), "--manifest", str(snapshot), "--out", str(out),
                       "--mode", "lora", "--lora-rank", "4", "--lora-target-modules", "to_q,to_k,to_v,to_out.0",
                       "--steps", "4", "--lr", "1e-3", "--batch-size", "2", "--gradient-accumulation-steps", "2",
                       "--save-every", "2", *TINY])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert [m["step"] for m in metrics_lines(captured.out)] == [1, 2, 3, 4]
    checkpoints = wan_weights.list_checkpoints(out)
    assert [wan_weights.checkpoint_step(c) for c in checkpoints] == [2, 4]
    latest = checkpoints[-1]
    assert wan_weights.checkpoint_kind(latest) == "lora" and not (latest / "transformer").exists()
    adapter = load_file(latest / wan_weights.LORA_WEIGHT_NAME)
    assert adapter and all(".lora_A." in k or ".lora_B." in k for k in adapter)
    assert {k.split(".")[0] for k in adapter} == {"transformer"}
    assert any(k.endswith("attn2.to_out.0.lora_B.weight") for k in adapter)
    # lora_B starts at zero: training moved it.
    assert any(float(v.abs().max()) > 0 for k, v in adapter.items() if ".lora_B." in k)
    # The base weights are untouched (the run never writes them).
    base_after = load_file(tiny_wan / "transformer" / "diffusion_pytorch_model.safetensors")
    assert all((base_before[k] == base_after[k]).all() for k in base_before)
    assert json.loads((latest / wan_weights.TRAINER_STATE).read_text())["mode"] == "lora"

    prompts = tmp_path / "tasks.json"
    prompts.write_text(json.dumps([{"index": 7, "prompt": PROMPTS[0]}]))
    code = generate.main(["--weights", str(tiny_wan), "--checkpoint", str(out), "--prompts", str(prompts),
                          "--out", str(tmp_path / "videos"), "--steps", "2", "--frames", "5", "--height", "32",
                          "--width", "32", "--max-sequence-length", "16"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    video = tmp_path / "videos" / "lora-run-step4" / "7.mp4"
    info = probe(video)
    assert (info.frame_count, info.width, info.height) == (5, 32, 32)
    assert metrics_lines(captured.out)[0]["video"] == str(video)


# ------------------------------------------------------------------------------------------- generation


def test_generate_from_the_base_model_writes_opencv_readable_videos(tiny_wan, tmp_path, capsys):
    prompts = tmp_path / "tasks.json"
    prompts.write_text(json.dumps([{"index": 1, "prompt": PROMPTS[0]}, {"index": 2, "prompt": PROMPTS[1]}]))
    args = ["--weights", str(tiny_wan), "--prompts", str(prompts), "--out", str(tmp_path / "videos"),
            "--model-name", "TinyWan", "--steps", "2", "--guidance", "5.0", "--frames", "5", "--height", "32",
            "--width", "32", "--seed", "42", "--max-sequence-length", "16"]
    assert generate.main(args) == 0
    lines = metrics_lines(capsys.readouterr().out)
    assert [(line["index"], line["done"], line["total"], line["skipped"]) for line in lines] == [
        ("1", 1, 2, False), ("2", 2, 2, False)]
    for index in (1, 2):
        info = probe(tmp_path / "videos" / "TinyWan" / f"{index}.mp4")
        assert (info.frame_count, info.width, info.height) == (5, 32, 32) and info.codec in ("avc1", "h264")
    # Run again: the finished videos are kept, not generated again.
    assert generate.main(args) == 0
    assert all(line["skipped"] for line in metrics_lines(capsys.readouterr().out))


# ------------------------------------------------------------------------------------------- full fine-tuning


@pytest.mark.slow
def test_full_fine_tuning_loss_falls_with_one_metrics_line_per_step(finished_run):
    code, stdout, stderr = finished_run.result()
    printed = metrics_lines(stdout)  # stdout holds the metrics lines and nothing else
    stored = metrics_lines((finished_run.out / "metrics.jsonl").read_text())
    assert printed == stored
    assert [m["step"] for m in stored] == list(range(1, FULL_STEPS + 1))
    for m in stored:
        assert set(m) == METRIC_KEYS
        assert m["lr"] == pytest.approx(1e-3) and m["seconds"] > 0 and m["gpu_memory_mb"] == 0
    losses = [m["loss"] for m in stored]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f"loss: first 5 mean {first:.4f}, last 5 mean {last:.4f}")
    assert last < first


@pytest.mark.slow
def test_full_checkpoints_are_safetensors_loadable_by_the_generator(finished_run, tiny_wan, tmp_path, capsys):
    from diffusers import WanTransformer3DModel

    checkpoints = wan_weights.list_checkpoints(finished_run.out)
    assert [wan_weights.checkpoint_step(c) for c in checkpoints] == [10, 20, 30]
    for checkpoint in checkpoints:
        assert wan_weights.checkpoint_kind(checkpoint) == "full"
        assert list((checkpoint / "transformer").glob("*.safetensors"))
        assert (checkpoint / wan_weights.TRAINING_STATE).is_file()
        state = json.loads((checkpoint / wan_weights.TRAINER_STATE).read_text())
        assert state["step"] == wan_weights.checkpoint_step(checkpoint) and state["mode"] == "full"
    trained = WanTransformer3DModel.from_pretrained(checkpoints[-1] / "transformer", local_files_only=True)
    base = WanTransformer3DModel.from_pretrained(tiny_wan / "transformer", local_files_only=True)
    assert any(not (a == b).all() for a, b in zip(trained.state_dict().values(), base.state_dict().values()))

    prompts = tmp_path / "tasks.json"
    prompts.write_text(json.dumps([{"index": 3, "prompt": PROMPTS[2]}]))
    assert generate.main(["--weights", str(tiny_wan), "--checkpoint", str(checkpoints[1]), "--prompts",
                          str(prompts), "--out", str(tmp_path / "videos"), "--steps", "2", "--frames", "5",
                          "--height", "32", "--width", "32", "--max-sequence-length", "16"]) == 0
    run_name = finished_run.out.name
    assert probe(tmp_path / "videos" / f"{run_name}-step20" / "3.mp4").frame_count == 5


@pytest.mark.slow
def test_resume_continues_at_the_next_step_exactly(finished_run, tiny_wan, snapshot, tmp_path, capsys):
    """Interrupted after the step-20 checkpoint: --resume trains steps 21..30 again and sees the same data, noise
    and optimizer state, so the losses equal the uninterrupted run's; metrics.jsonl keeps one line per step."""
    original = metrics_lines((finished_run.out / "metrics.jsonl").read_text())
    out = tmp_path / "resumed"
    shutil.copytree(finished_run.out, out)
    shutil.rmtree(out / "checkpoints" / "checkpoint-000030")
    code = train.main(["--weights", str(tiny_wan), "--manifest", str(snapshot), "--out", str(out), "--resume",
                       "--steps", str(FULL_STEPS), "--lr", "1e-3", "--batch-size", "1", "--save-every", "10", *TINY])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "resumed from" in captured.err and "checkpoint-000020" in captured.err
    assert "encoding" not in captured.err  # latents and prompts came from the cache
    printed = metrics_lines(captured.out)
    assert [m["step"] for m in printed] == list(range(21, FULL_STEPS + 1))
    assert [m["loss"] for m in printed] == pytest.approx([m["loss"] for m in original[20:]], rel=1e-4)
    stored = metrics_lines((out / "metrics.jsonl").read_text())
    assert [m["step"] for m in stored] == list(range(1, FULL_STEPS + 1))
    assert wan_weights.checkpoint_step(wan_weights.latest_checkpoint(out)) == 30
    # Resuming a finished run has nothing left to do.
    assert train.main(["--weights", str(tiny_wan), "--manifest", str(snapshot), "--out", str(out), "--resume",
                       "--steps", str(FULL_STEPS), "--batch-size", "1", *TINY]) == 0
    assert capsys.readouterr().out == ""


# ------------------------------------------------------------------------------------------- config validation


def test_paper_defaults():
    c = TrainConfig()
    assert (c.batch_size, c.max_steps, c.mixed_precision, c.cfg_drop_rate) == (8, 5000, "bf16", 0.1)
    assert (c.height, c.width, c.num_frames, c.weight_decay) == (480, 832, 81, 0.01)
    assert c.gradient_checkpointing is True and c.save_every == 500
    assert c.effective_learning_rate == 1e-5
    assert TrainConfig(mode="lora").effective_learning_rate == 1e-4
    assert TrainConfig(mode="lora", learning_rate=3e-4).effective_learning_rate == 3e-4
    g = GenerateConfig()
    assert (g.steps, g.guidance, g.height, g.width, g.num_frames) == (50, 5.0, 480, 832, 81)
    assert validate(c) == [] and validate(TrainConfig(mode="lora")) == [] and validate(g) == []


@pytest.mark.parametrize("changes, expected", [
    ({"num_frames": 80}, "num_frames 80 is not of the form 4k+1"),
    ({"num_frames": 0}, "num_frames must be a positive whole number"),
    ({"height": 481}, "height 481 is not a multiple of 16"),
    ({"width": 830}, "width 830 is not a multiple of 16"),
    ({"learning_rate": 0.0}, "learning rate must be positive"),
    ({"learning_rate": -1e-5}, "learning rate must be positive"),
    ({"batch_size": 0}, "batch size must be at least 1"),
    ({"batch_size": 8, "gradient_accumulation_steps": 3}, "not divisible by the 3 gradient accumulation steps"),
    ({"max_steps": 0}, "the number of steps must be at least 1"),
    ({"cfg_drop_rate": 1.5}, "CFG drop rate must be between 0 and 1"),
    ({"mixed_precision": "fp8"}, "mixed precision must be one of"),
    ({"mode": "qlora"}, "mode must be one of full, lora"),
    ({"mode": "lora", "lora_rank": 0}, "LoRA rank must be a positive whole number"),
    ({"mode": "lora", "lora_target_modules": []}, "LoRA target modules must be a non-empty list"),
    ({"weight_decay": -0.1}, "weight decay must be 0 or more"),
    ({"save_every": 0}, "save_every must be at least 1"),
    ({"timestep_sampling": "cubic"}, "timestep sampling must be one of"),
])
def test_validate_names_each_problem(changes, expected):
    problems = validate(TrainConfig(**changes))
    assert len(problems) == 1 and expected in problems[0], problems


def test_validate_reports_every_problem_and_checks_generation():
    assert len(validate(TrainConfig(num_frames=8, height=30, width=40, learning_rate=0, batch_size=0))) == 5
    problems = validate(GenerateConfig(num_frames=80, steps=0, guidance=-1, model_name="a/b"))
    assert len(problems) == 4 and "4k+1" in problems[0]


def test_config_round_trips_and_refuses_unknown_keys():
    c = TrainConfig(mode="lora", lora_rank=16, num_frames=49)
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ValueError, match="unknown training setting"):
        TrainConfig.from_dict({"learnin_rate": 1e-4})
