"""The classify stage's VideoMAE classifier (datasets/classifier.py), on real tiny models.

Every model here is a real ``VideoMAEForVideoClassification`` built by ``build_tiny_videomae`` (random weights,
seeded), saved to a temp directory and loaded through the same ``load_classifier`` path as production; nothing is
mocked and nothing is downloaded.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from datasets.classifier import (  # noqa: E402
    ClassifierUnavailable,
    PreprocessConfig,
    build_tiny_videomae,
    classifier_from_settings,
    load_classifier,
    micro_index,
    model_version,
    preprocess_frames,
    sample_indices,
    train_classifier,
)

RED_BGR = (0, 0, 230)
BLUE_BGR = (230, 0, 0)


def clip(bgr, *, n=6, h=40, w=56, seed=0) -> list[np.ndarray]:
    """``n`` frames of one colour with a little noise (BGR uint8)."""
    rng = np.random.default_rng(seed)
    base = np.array(bgr, dtype=np.int16)
    return [np.clip(base + rng.integers(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8) for _ in range(n)]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread; on a busy 2-core machine two threads contend (0.7 s vs 6 s to train)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_videomae(tmp_path_factory.mktemp("models") / "tiny-videomae", seed=0)


@pytest.fixture(scope="module")
def classifier(tiny_dir):
    return load_classifier(tiny_dir, device="cpu")


def test_predict_is_a_probability_and_deterministic_across_loads(tiny_dir, classifier):
    frames = clip(RED_BGR, n=7)
    p = classifier.predict(frames)
    assert isinstance(p, float) and 0.0 <= p <= 1.0
    again = load_classifier(tiny_dir, device="cpu")
    assert again.predict(frames) == p
    assert again.version == classifier.version
    assert classifier.version.startswith("tiny-videomae@") and len(classifier.version) <= 80
    assert classifier.micro_index == 1 and classifier.num_frames == 4


def test_save_load_round_trip_gives_identical_predictions(tmp_path, classifier):
    frames = clip(BLUE_BGR, n=3, h=30, w=30, seed=3)  # fewer frames than the model takes: frames repeat
    copy_dir = tmp_path / "copy"
    classifier.model.save_pretrained(str(copy_dir))
    copy = load_classifier(copy_dir, device="cpu")
    assert copy.predict(frames) == classifier.predict(frames)
    assert copy.version.split("@")[1] == classifier.version.split("@")[1]  # same config and weights, same hash


def test_version_changes_with_the_weights(tmp_path):
    a = build_tiny_videomae(tmp_path / "m", seed=0)
    version_a = model_version(a)
    build_tiny_videomae(tmp_path / "m", seed=1)
    assert model_version(a) != version_a


def test_no_model_configured_means_unclassified():
    assert classifier_from_settings("") is None
    assert classifier_from_settings("   ") is None


def test_classifier_from_settings_loads_a_configured_dir(tiny_dir):
    assert classifier_from_settings(str(tiny_dir)).version == model_version(tiny_dir)


def test_missing_dir_is_unavailable(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ClassifierUnavailable, match=r"does not exist") as exc:
        load_classifier(missing)
    assert str(missing) in str(exc.value)
    with pytest.raises(ClassifierUnavailable, match=r"does not exist"):
        classifier_from_settings(str(missing))  # configured but broken: an error, not "unclassified"


def test_dir_without_config_is_unavailable(tmp_path):
    with pytest.raises(ClassifierUnavailable, match=r"no config\.json"):
        load_classifier(tmp_path)


def test_non_videomae_config_is_unavailable(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}))
    with pytest.raises(ClassifierUnavailable, match=r"not a VideoMAE config \(model_type 'bert'"):
        load_classifier(tmp_path)


def test_videomae_config_without_weights_is_unavailable(tmp_path, tiny_dir):
    (tmp_path / "config.json").write_bytes((tiny_dir / "config.json").read_bytes())
    with pytest.raises(ClassifierUnavailable, match=r"has no weights"):
        load_classifier(tmp_path)


def test_corrupt_weights_are_unavailable(tmp_path, tiny_dir):
    (tmp_path / "config.json").write_bytes((tiny_dir / "config.json").read_bytes())
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ClassifierUnavailable, match=r"Could not load a VideoMAE classifier"):
        load_classifier(tmp_path)


def test_pretraining_checkpoint_without_a_head_is_unavailable(tmp_path):
    """A head initialised at random on load would give a fake result: refuse it."""
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    config = VideoMAEConfig(image_size=32, patch_size=8, num_frames=4, hidden_size=32, num_hidden_layers=1,
                            num_attention_heads=2, intermediate_size=64, decoder_hidden_size=32,
                            decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=64)
    VideoMAEForPreTraining(config).save_pretrained(str(tmp_path))
    with pytest.raises(ClassifierUnavailable, match=r"no trained classification head"):
        load_classifier(tmp_path)


def test_micro_label_mapping():
    assert micro_index({0: "non-micro", 1: "micro"}) == 1
    assert micro_index({"0": "Micro Simulation", "1": "other"}) == 0
    assert micro_index({0: "macro", 1: "other", 2: "microscale"}) == 2
    assert micro_index({0: "LABEL_0", 1: "LABEL_1"}) == 1  # no micro name: index 1


def test_preprocessing_shape_colour_order_and_sampling():
    pre = PreprocessConfig(num_frames=4, shortest_edge=32, resize_hw=None, crop_hw=(32, 32))
    frames = [np.full((48, 80, 3), (255, 0, 0), np.uint8) for _ in range(9)]  # pure blue in BGR
    x = preprocess_frames(frames, pre)
    assert tuple(x.shape) == (1, 4, 3, 32, 32)
    rgb = x[0, 0, :, 16, 16].tolist()
    expected = [(0 - 0.485) / 0.229, (0 - 0.456) / 0.224, (1 - 0.406) / 0.225]
    assert rgb == pytest.approx(expected, abs=1e-4)  # blue ends up in the last (B of RGB) channel
    assert sample_indices(9, 4) == [0, 3, 5, 8]
    assert sample_indices(2, 4) == [0, 0, 1, 1]
    with pytest.raises(ValueError):
        preprocess_frames([], pre)


def test_processor_config_in_the_model_dir_is_used(tmp_path):
    model_dir = build_tiny_videomae(tmp_path / "m")
    (model_dir / "preprocessor_config.json").write_text(json.dumps({
        "do_resize": True, "size": {"shortest_edge": 40}, "do_center_crop": True,
        "crop_size": {"height": 32, "width": 32}, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    }))
    clf = load_classifier(model_dir, device="cpu")
    assert clf.preprocess.shortest_edge == 40 and clf.preprocess.mean == (0.5, 0.5, 0.5)
    x = clf.pixel_values([np.full((60, 90, 3), 255, np.uint8)])
    assert tuple(x.shape) == (1, 4, 3, 32, 32)
    assert float(x.min()) == pytest.approx(1.0) and float(x.max()) == pytest.approx(1.0)
    assert 0.0 <= clf.predict([np.zeros((60, 90, 3), np.uint8)] * 5) <= 1.0


def test_training_separates_red_from_blue(tmp_path, tiny_dir):
    clips = [(clip(RED_BGR, seed=i), "micro") for i in range(8)]
    clips += [(clip(BLUE_BGR, seed=100 + i), False) for i in range(8)]  # a bool label: not micro
    metrics = train_classifier(model_dir=tiny_dir, clips=clips, out_dir=tmp_path / "trained",
                               epochs=8, lr=1e-3, seed=0)
    losses = metrics["epoch_losses"]
    assert len(losses) == 8 and metrics["num_clips"] == 16
    assert losses[-1] < losses[0] * 0.5, losses

    trained = load_classifier(tmp_path / "trained", device="cpu")
    assert trained.version == metrics["version"] and trained.version.startswith("trained@")
    for seed in (500, 501):  # clips not seen in training
        assert trained.predict(clip(RED_BGR, seed=seed)) > 0.5
        assert trained.predict(clip(BLUE_BGR, seed=seed)) < 0.5
