"""A tiny, randomly initialised Wan2.1 text-to-video weights directory in the standard diffusers layout.

``build_tiny_wan(path)`` writes::

    path/model_index.json        WanPipeline, with the component classes below
    path/transformer/            WanTransformer3DModel (patch (1, 2, 2), 2 heads x 12, 2 layers, text_dim 32)
    path/vae/                    AutoencoderKLWan (base_dim 8, z_dim 4, 8x spatial / 4x temporal compression)
    path/text_encoder/           transformers UMT5EncoderModel (d_model 32, 2 layers)
    path/tokenizer/              a Unigram tokenizer trained here with the ``tokenizers`` library on a few sentences,
                                 saved as a transformers fast tokenizer (pad 0, eos 1, unk 2, like T5's)
    path/scheduler/              UniPCMultistepScheduler in flow-prediction mode with flow_shift 3.0, the scheduler
                                 Wan2.1-T2V-1.3B-Diffusers ships

so that ``WanPipeline.from_pretrained(path, local_files_only=True)`` - the code that loads the real
Wan2.1-T2V-1.3B weights - loads it, and the trainer and the generator run on it end to end in seconds on a CPU.
The models are random: the videos are noise, the point is the code path.
"""
from __future__ import annotations

import os
from pathlib import Path

#: Sentences the tiny tokenizer is trained on (any text works; these cover the test prompts' words).
TOKENIZER_CORPUS = (
    "A short video showing a doctor performing a routine checkup on a patient in a well-lit clinic room.",
    "An animated medical illustration showing the human cardiovascular system with blood flowing through arteries.",
    "A nurse administering a vaccine injection to a patient's arm in a hospital setting.",
    "Bacteria dividing under a microscope, time-lapse, high magnification, stained cells in a petri dish.",
    "A red square moving across a blue background; a green circle growing slowly in the centre of the frame.",
    "Cells, proteins and molecules interact inside a living tissue sample viewed at the microscale.",
)
TOKENIZER_VOCAB_SIZE = 256
TEXT_DIM = 32


def _train_tokenizer():
    """A T5-like tokenizer (Unigram, Metaspace, ``</s>`` appended) trained on :data:`TOKENIZER_CORPUS`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=TOKENIZER_VOCAB_SIZE, special_tokens=["<pad>", "</s>", "<unk>"],
                                      unk_token="<unk>", show_progress=False)
    tokenizer.train_from_iterator(list(TOKENIZER_CORPUS), trainer=trainer)
    eos = tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                             special_tokens=[("</s>", eos)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=512)


def build_tiny_wan(path: str | os.PathLike, *, seed: int = 0) -> Path:
    """Build and save a tiny random Wan2.1 T2V weights directory at ``path`` (created; existing files are
    overwritten); returns the path. Deterministic for a given ``seed``."""
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer()

    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
        text_dim=TEXT_DIM, freq_dim=32, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    torch.manual_seed(seed + 2)
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=32, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id))
    text_encoder.eval()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
                                        num_train_timesteps=1000)
    pipeline = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                           transformer=transformer)
    pipeline.save_pretrained(path, safe_serialization=True)
    return path
