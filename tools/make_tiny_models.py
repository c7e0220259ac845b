"""Random-weight LTX-2 model files under the real names: tiny ones (the default) for testing the worker against a
real ComfyUI v0.26.2 without a GPU, and full-size ones (`--size full`) with the real shapes, for measuring speed
and memory on a GPU without the 45 GB download.

Each part is built from the ComfyUI checkout's own classes (so the key names are exactly what its loaders
expect) with small widths, filled deterministically from --seed, and written with the metadata ComfyUI reads:
- the checkpoint: the LTX-2 audio-video transformer (`model.diffusion_model.`), the video VAE (`vae.`), the
  audio VAE (`audio_vae.`) and its vocoder (`vocoder.`), and the metadata `config` describing all four;
- the distilled checkpoint (for "mode": "distilled"): the same, with other transformer weights;
- the text encoder: Gemma 3 12B cannot be made small in ComfyUI (its shape is fixed in code), so the file
  holds only a small SentencePiece tokenizer (`spiece_model`) and the norm weights; every other weight stays
  zero when loaded (ComfyUI warns), which is enough to run the graph;
- the distilled LoRA (rank 4) and the 2x latent upscaler (with its own metadata `config`).

`--size full` (on a GPU machine, about a minute, ~45 GB of disk and ~40 GB of RAM) writes the real shapes, each
file within 0.5 % of the real one's bytes (REAL_BYTES), because memory and cold-start figures depend on them:
- the transformer with ComfyUI's `LTXAVModel` defaults (48 layers, 19.6 B parameters), every 2-D block linear
  in ComfyUI's FP8 mixed-precision format (float8_e4m3fn weight, weight_scale, input_scale, comfy_quant) except
  those of the first and last three blocks, kept bf16 (BF16_BLOCKS: the real checkpoint's non-block weights and
  VAE match the stand-in's, so its 2.3 GB more are block linears in a higher precision, about six blocks' worth;
  keeping the first and last blocks so is the usual FP8 recipe), the rest bf16, and the text projection
  (3840*49 -> 3840) the real checkpoint carries for the text encoder;
- the real video VAE (`VideoVAE(version=2)`), an audio VAE and HiFi-GAN vocoder of plausible widths;
- Gemma 3 12B complete, its decoder-layer linears in NVFP4 (ComfyUI's own quantizer and on-disk layout, as in
  `gemma_3_12B_it_fp4_mixed`) except enough of them, from the first and last layers inwards, kept bf16 to reach
  the real file's size (the "mixed" in its name), embeddings, norms and the vision tower bf16, plus the small
  tokenizer: ComfyUI places and runs it as it would the real file (no missing weights materialised in fp32);
- the rank-384 LoRA for the 1,344 block linears and, to reach the real file's size, for the transformer's
  non-block linears in name order (connectors, adaLN, projections); the upscaler at the real widths (mid 1024,
  4 blocks: the real shape, 22 KB short);
- the distilled checkpoint as a hard link to the dev one (its real file is 0.2 % larger; same bytes: its speed
  is what is measured).
`--controls` adds the video-to-video preprocessors' files (ENABLE_MODELS=control_depth, control_pose): a Lotus-D
UNet that ComfyUI detects as `LotusD` (model channels 320, context 1024, the 4-wide task embedding; tiny: one level
with one block, 28 M parameters; full: the real SD 2 shape, fp16), the SD VAE at its real shape (fp32, as the
real file), and an SDPose checkpoint: an SD 2 UNet with SDPose's heatmap head (`model.diffusion_model.`, which
ComfyUI's SDPoseKeypointExtractor needs, fed the last 640-channel features: tiny, two levels of one block) and the
SD VAE (`first_stage_model.`), fp16.
Values are random: the video is noise, a worst case for the MP4 encoder. Full-size files get no sha256 (a
benchmark does not verify them; reading 42 GB would cost a minute).

Run it with ComfyUI's interpreter (it imports torch and ComfyUI):

    $COMFY_PYTHON tools/make_tiny_models.py --comfyui-dir "$COMFYUI_DIR" --out /tmp/volume [--seed 0] [--size full]

The files land in <out>/models/<folder>/, where the worker's manifest expects them; their sizes and sha256
are printed (and written, by manifest role, to <out>/models/tiny-manifest.json) for a test manifest.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import struct
import sys
import time
from pathlib import Path

TRANSFORMER = {  # 1.7 M parameters; the text-attention width must equal heads x head size
    "num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 32, "cross_attention_dim": 64,
    "audio_num_attention_heads": 2, "audio_attention_head_dim": 16, "audio_cross_attention_dim": 32,
    "in_channels": 128, "audio_in_channels": 128, "caption_channels": 3840, "rope_type": "split",
    "connector_num_layers": 0,
}
VIDEO_VAE = {  # patch 4 x three 2x stages = 32x spatial, 8x temporal; 128 latent channels (fixed in code)
    "_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3, "latent_channels": 128,
    "encoder_blocks": [["res_x", {"num_layers": 1}], ["compress_all", {}], ["res_x", {"num_layers": 1}],
                       ["compress_all", {}], ["res_x", {"num_layers": 1}], ["compress_all", {}],
                       ["res_x", {"num_layers": 1}]],
    "decoder_blocks": [["res_x", {"num_layers": 1, "inject_noise": False}],
                       ["compress_all", {"residual": True, "multiplier": 2}],
                       ["res_x", {"num_layers": 1, "inject_noise": False}],
                       ["compress_all", {"residual": True, "multiplier": 2}],
                       ["res_x", {"num_layers": 1, "inject_noise": False}],
                       ["compress_all", {"residual": True, "multiplier": 2}],
                       ["res_x", {"num_layers": 1, "inject_noise": False}]],
    "encoder_base_channels": 8, "decoder_base_channels": 8, "scaling_factor": 1.0, "norm_layer": "pixel_norm",
    "patch_size": 4, "latent_log_var": "uniform", "use_quant_conv": False, "causal_decoder": False,
    "timestep_conditioning": False,
}
AUDIO_VAE = {  # mel 64 bins at 16 kHz, hop 160, latent 8 channels x 16 bins (fixed in code); widths free
    "model": {"params": {"ddconfig": {
        "double_z": True, "mel_bins": 64, "z_channels": 8, "resolution": 256, "downsample_time": False,
        "in_channels": 2, "out_ch": 2, "ch": 8, "ch_mult": [1, 2, 4], "num_res_blocks": 1, "attn_resolutions": [],
        "dropout": 0.0, "mid_block_add_attention": False, "norm_type": "pixel", "causality_axis": "height"},
        "sampling_rate": 16000}},
    "preprocessing": {"stft": {"filter_length": 1024, "hop_length": 160}},
}
VOCODER = {  # HiFi-GAN: 6*5*2*2*2 = 240 samples per mel frame -> 24 kHz
    "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3, 5]], "upsample_rates": [6, 5, 2, 2, 2],
    "upsample_kernel_sizes": [12, 10, 4, 4, 4], "upsample_initial_channel": 32, "stereo": True,
    "activation": "snake", "output_sample_rate": 24000,
}
UPSCALER = {"_class_name": "LatentUpsampler", "in_channels": 128, "mid_channels": 32, "num_blocks_per_stage": 1,
            "dims": 3, "spatial_upsample": True, "temporal_upsample": False, "spatial_scale": 2.0,
            "rational_resampler": False}
GEMMA_LAYERS, GEMMA_WIDTH, GEMMA_HEAD = 48, 3840, 256  # fixed by ComfyUI's Gemma3_12B_Config
LORA_RANK = 4
FULL_LORA_RANK = 384
# the real files' bytes (config.ini's manifest); `--size full` comes within 0.5 % of each
REAL_BYTES = {"checkpoint": 27_078_716_018, "checkpoint_distilled": 27_127_589_812, "lora": 7_674_558_424,
              "text_encoder": 9_447_702_218, "upscaler": 995_765_578, "depth_model": 1_735_197_352,
              "depth_vae": 334_641_190, "pose_model": 1_920_000_000}  # SDPose: "1.79 GiB", not exact
# ComfyUI's LotusD UNet (comfy/model_detection.py's LotusD entry at v0.26.2); TINY_LOTUS keeps what detection
# matches (model channels, context, the linear transformer projections, the task embedding) at one level
FULL_LOTUS = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
              "legacy": False, "adm_in_channels": 4, "in_channels": 4, "model_channels": 320,
              "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
              "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1, "use_linear_in_transformer": True,
              "context_dim": 1024, "num_head_channels": 64, "transformer_depth_output": [1] * 9 + [0] * 3,
              "use_temporal_attention": False, "use_temporal_resblock": False, "num_classes": "sequential"}
TINY_LOTUS = {**FULL_LOTUS, "num_res_blocks": [1], "transformer_depth": [1], "channel_mult": [1],
              "transformer_depth_output": [1, 1]}
# SDPose: ComfyUI's SD 2 UNet (model_detection: context 1024, no task embedding) with the heatmap head
FULL_SDPOSE = {**FULL_LOTUS, "adm_in_channels": None, "num_classes": None, "heatmap_head": True}
# tiny: attention only at the half-size level (full-size attention over 768 x 1024 frames is gigabytes on a CPU)
TINY_SDPOSE = {**FULL_SDPOSE, "num_res_blocks": [1, 1], "transformer_depth": [0, 1], "channel_mult": [1, 2],
               "transformer_depth_output": [1, 1, 0, 0]}
# the Stable Diffusion VAE ComfyUI builds for an SD 1/2 VAE file (comfy/sd.py)
SD_VAE = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
          "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
BF16_BLOCKS = (0, 1, 2, 45, 46, 47)  # the checkpoint's blocks whose linears stay bf16 (see the docstring)
HEADER_BYTES_PER_TENSOR = 160  # about what safetensors' JSON header takes per tensor, for size planning
FULL_UPSCALER = {**UPSCALER, "mid_channels": 1024, "num_blocks_per_stage": 4}  # 995,743,560 bytes (real: 995,765,578)
FULL_AUDIO_VAE = {"model": {"params": {"ddconfig": {**AUDIO_VAE["model"]["params"]["ddconfig"], "ch": 128,
                                                    "num_res_blocks": 2}, "sampling_rate": 16000}},
                  "preprocessing": AUDIO_VAE["preprocessing"]}
FULL_VOCODER = {**VOCODER, "upsample_initial_channel": 1024, "resblock_kernel_sizes": [3, 7, 11],
                "resblock_dilation_sizes": [[1, 3, 5]] * 3}
FILES = {  # manifest role: (ComfyUI folder, the real file name)
    "checkpoint": ("checkpoints", "ltx-2-19b-dev-fp8.safetensors"),
    "checkpoint_distilled": ("checkpoints", "ltx-2-19b-distilled-fp8.safetensors"),
    "text_encoder": ("text_encoders", "gemma_3_12B_it_fp4_mixed.safetensors"),
    "lora": ("loras", "ltx-2-19b-distilled-lora-384.safetensors"),
    "upscaler": ("latent_upscale_models", "ltx-2-spatial-upscaler-x2-1.0.safetensors"),
    "depth_model": ("diffusion_models", "lotus-depth-d-v1-1.safetensors"),
    "depth_vae": ("vae", "vae-ft-mse-840000-ema-pruned.safetensors"),
    "pose_model": ("checkpoints", "sdpose_wholebody_fp16.safetensors"),
}


def fill(module, torch, generator) -> dict:
    """The module's state dict with every float tensor drawn from `generator` (small values, so the tiny
    network stays numerically tame), in a fixed order: the same seed gives the same bytes."""
    state = {}
    for name, tensor in sorted(module.state_dict().items()):
        if tensor.is_floating_point():
            tensor = torch.randn(tensor.shape, generator=generator, dtype=torch.float32) * 0.02
        state[name] = tensor.contiguous().clone()
    return state


def tokenizer_model(seed: int) -> bytes:
    """A small SentencePiece model with Gemma's special ids (pad 0, eos 1, bos 2, unk 3)."""
    import sentencepiece as spm

    words = ["a", "red", "fox", "running", "through", "snow", "lighthouse", "at", "dusk", "waves", "the", "camera",
             "blurry", "low", "quality", "still", "frame", "watermark", "cinematic", "forest", "golden", "hour"]
    corpus = [" ".join(words[(i * 7 + j + seed) % len(words)] for j in range(12)) for i in range(400)]
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=out, vocab_size=48,
                                   hard_vocab_limit=False, model_type="unigram", pad_id=0, eos_id=1, bos_id=2, unk_id=3,
                                   character_coverage=1.0, num_threads=1, minloglevel=2)
    return out.getvalue()


def _proto_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def full_vocab_tokenizer(seed: int, pieces: int) -> bytes:
    """tokenizer_model with `pieces` ids in all, so that every id the full-size Gemma can generate decodes (its
    prompt enhancer samples from all of them). The extra pieces ("<tN>", scored far below the real ones, so no
    prompt is encoded with them) are appended as serialized ModelProto `pieces` entries: protobuf appends a
    repeated field's entries when messages are concatenated."""
    base = tokenizer_model(seed)
    extra = bytearray()
    for i in range(48, pieces):  # tokenizer_model's pieces are ids 0-47
        text = f"<t{i}>".encode()
        body = (b"\x0a" + _proto_varint(len(text)) + text  # piece (1, bytes)
                + b"\x15" + struct.pack("<f", -1000.0)  # score (2, float)
                + b"\x18\x01")  # type (3) NORMAL
        extra += b"\x0a" + _proto_varint(len(body)) + body  # ModelProto.pieces (1, message)
    return base + bytes(extra)


def fill_to(need: int, items) -> list:
    """The keys of `items` ((key, bytes) pairs, taken in their order) whose bytes add up to at most `need`,
    skipping any that would overshoot: a stand-in reaches a real file's size from below, to within its
    smallest item."""
    chosen = []
    for key, size in items:
        if size <= need:
            chosen.append(key)
            need -= size
    return chosen


def outside_in(count: int) -> list[int]:
    """0, count-1, 1, count-2, ...: the first and last layers first."""
    order = []
    for i in range((count + 1) // 2):
        order += [i] if i == count - 1 - i else [i, count - 1 - i]
    return order


def block_index(name: str) -> int | None:
    """The transformer block of a state-dict key (`transformer_blocks.<i>.`), else None."""
    if not name.startswith("transformer_blocks."):
        return None
    return int(name.split(".")[1])


def build(comfyui_dir: Path, out: Path, seed: int) -> dict[str, dict]:
    sys.path.insert(0, str(comfyui_dir))
    import comfy.cli_args
    import torch

    comfy.cli_args.args.cpu = True  # build on the CPU whatever the machine has
    import comfy.ops
    from comfy.ldm.lightricks.av_model import LTXAVModel
    from comfy.ldm.lightricks.latent_upsampler import LatentUpsampler
    from comfy.ldm.lightricks.vae.audio_vae import AudioVAE
    from comfy.ldm.lightricks.vae.causal_video_autoencoder import VideoVAE

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    ops = comfy.ops.disable_weight_init
    config = {"transformer": TRANSFORMER, "vae": VIDEO_VAE, "audio_vae": AUDIO_VAE, "vocoder": VOCODER}
    checkpoint = {}
    transformer = LTXAVModel(**TRANSFORMER, operations=ops, dtype=torch.float32, device="cpu")
    checkpoint.update({f"model.diffusion_model.{k}": v for k, v in fill(transformer, torch, generator).items()})
    checkpoint.update({f"vae.{k}": v for k, v in fill(VideoVAE(config=VIDEO_VAE), torch, generator).items()})
    audio = AudioVAE(metadata={"config": json.dumps(config)})
    for key, value in fill(audio, torch, generator).items():
        checkpoint[key.replace("autoencoder.", "audio_vae.", 1) if key.startswith("autoencoder.") else key] = value
    # the distilled checkpoint: the same architecture and VAEs, other transformer weights
    distilled = {**checkpoint, **{f"model.diffusion_model.{k}": v
                                  for k, v in fill(transformer, torch, generator).items()}}
    lora = {}
    for name, tensor in sorted(transformer.state_dict().items()):
        if name.startswith("transformer_blocks.") and name.endswith(".weight") and tensor.ndim == 2 and \
                any(part in name for part in (".to_q.", ".to_k.", ".to_v.", ".to_out.0.")):
            module = name[: -len(".weight")]
            lora[f"diffusion_model.{module}.lora_A.weight"] = torch.randn(
                (LORA_RANK, tensor.shape[1]), generator=generator) * 0.01
            lora[f"diffusion_model.{module}.lora_B.weight"] = torch.randn(
                (tensor.shape[0], LORA_RANK), generator=generator) * 0.01
    upscaler = LatentUpsampler.from_config(UPSCALER)
    text_encoder = {"spiece_model": torch.frombuffer(bytearray(tokenizer_model(seed)), dtype=torch.uint8)}
    for i in range(GEMMA_LAYERS):  # RMSNorm weights (Gemma adds 1): zeros keep activations finite
        for norm in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                     "post_feedforward_layernorm"):
            text_encoder[f"model.layers.{i}.{norm}.weight"] = torch.zeros(GEMMA_WIDTH, dtype=torch.bfloat16)
        for norm in ("q_norm", "k_norm"):
            text_encoder[f"model.layers.{i}.self_attn.{norm}.weight"] = torch.zeros(GEMMA_HEAD, dtype=torch.bfloat16)
    text_encoder["model.norm.weight"] = torch.zeros(GEMMA_WIDTH, dtype=torch.bfloat16)

    parts = {
        "checkpoint": (checkpoint, {"config": json.dumps(config, sort_keys=True)}),
        "checkpoint_distilled": (distilled, {"config": json.dumps(config, sort_keys=True)}),
        "text_encoder": (text_encoder, None),
        "lora": (lora, None),
        "upscaler": (fill(upscaler, torch, generator), {"config": json.dumps(UPSCALER, sort_keys=True)}),
    }
    return {role: _save(out, role, tensors, metadata, digest=True) for role, (tensors, metadata) in parts.items()}


def _save(out: Path, role: str, tensors: dict, metadata: dict | None, digest: bool) -> dict:
    """Write one file atomically (temporary name, then rename) and describe it for tiny-manifest.json."""
    from safetensors.torch import save_file

    folder, name = FILES[role]
    path = out / "models" / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    info = {"folder": folder, "file": name, "size": path.stat().st_size}
    if digest:
        info["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return info


def build_full(comfyui_dir: Path, out: Path, seed: int) -> dict[str, dict]:
    """The real shapes (see the module's docstring), drawn on the GPU when there is one."""
    sys.path.insert(0, str(comfyui_dir))
    import comfy.cli_args
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    comfy.cli_args.args.cpu = device == "cpu"
    import comfy.ops
    from comfy.ldm.lightricks.av_model import LTXAVModel
    from comfy.ldm.lightricks.latent_upsampler import LatentUpsampler
    from comfy.ldm.lightricks.vae.audio_vae import AudioVAE
    from comfy.ldm.lightricks.vae.causal_video_autoencoder import VideoVAE
    from comfy.quant_ops import QuantizedTensor, TensorCoreNVFP4Layout
    from comfy.text_encoders.llama import Gemma3_12B

    generator = torch.Generator(device=device).manual_seed(seed)

    def draw(shape, std=0.02, dtype=torch.bfloat16):
        return (torch.randn(shape, generator=generator, device=device, dtype=torch.float32) * std).to(dtype)

    def quant_tag(fmt: str):
        return torch.tensor(list(json.dumps({"format": fmt}).encode()), dtype=torch.uint8)

    ops = comfy.ops.disable_weight_init
    with torch.device("meta"):
        transformer = LTXAVModel(operations=ops, dtype=torch.bfloat16, device="meta")
        gemma = Gemma3_12B({}, torch.bfloat16, "meta", ops)
    config = {"audio_vae": FULL_AUDIO_VAE, "vocoder": FULL_VOCODER}  # the video VAE's version follows its shapes
    checkpoint, lora = {}, {}
    state = sorted(transformer.state_dict().items())

    def add_lora(name, shape):
        module = f"diffusion_model.{name[: -len('.weight')]}"
        lora[f"{module}.lora_A.weight"] = draw((FULL_LORA_RANK, shape[1]), 0.01).cpu()
        lora[f"{module}.lora_B.weight"] = draw((shape[0], FULL_LORA_RANK), 0.01).cpu()

    def lora_bytes(shape):
        return FULL_LORA_RANK * (shape[0] + shape[1]) * 2 + 2 * HEADER_BYTES_PER_TENSOR

    linears = [(n, m.shape) for n, m in state if n.endswith(".weight") and m.ndim == 2]
    block_linears = [(n, shape) for n, shape in linears if block_index(n) is not None]
    need = REAL_BYTES["lora"] - sum(lora_bytes(shape) for _, shape in block_linears)
    extra = set(fill_to(need, [(n, lora_bytes(shape)) for n, shape in linears if block_index(n) is None]))
    for name, meta in state:
        key = f"model.diffusion_model.{name}"
        if block_index(name) is not None and name.endswith(".weight") and meta.ndim == 2:
            add_lora(name, meta.shape)
            if block_index(name) in BF16_BLOCKS:
                checkpoint[key] = draw(meta.shape).cpu()
                continue
            layer = key[: -len(".weight")]
            checkpoint[key] = draw(meta.shape, dtype=torch.float32).to(torch.float8_e4m3fn).cpu()
            checkpoint[f"{layer}.weight_scale"] = torch.tensor(1.0)
            checkpoint[f"{layer}.input_scale"] = torch.tensor(1.0)
            checkpoint[f"{layer}.comfy_quant"] = quant_tag("float8_e4m3fn")
        else:
            if name in extra:
                add_lora(name, meta.shape)
            checkpoint[key] = draw(meta.shape).cpu()
    checkpoint["text_embedding_projection.aggregate_embed.weight"] = draw((GEMMA_WIDTH, GEMMA_WIDTH * 49)).cpu()
    for name, tensor in sorted(VideoVAE(version=2).state_dict().items()):
        checkpoint[f"vae.{name}"] = draw(tensor.shape).cpu() if tensor.is_floating_point() else tensor
    audio = AudioVAE(metadata={"config": json.dumps(config)})
    for name, tensor in sorted(audio.state_dict().items()):
        key = name.replace("autoencoder.", "audio_vae.", 1) if name.startswith("autoencoder.") else name
        checkpoint[key] = draw(tensor.shape).cpu() if tensor.is_floating_point() else tensor
    written = {"checkpoint": _save(out, "checkpoint", checkpoint, {"config": json.dumps(config, sort_keys=True)},
                                   digest=False)}
    del checkpoint
    distilled = out / "models" / FILES["checkpoint_distilled"][0] / FILES["checkpoint_distilled"][1]
    distilled.unlink(missing_ok=True)
    os.link(out / "models" / FILES["checkpoint"][0] / FILES["checkpoint"][1], distilled)
    written["checkpoint_distilled"] = {**written["checkpoint"], "file": distilled.name}
    written["lora"] = _save(out, "lora", lora, None, digest=False)
    lora.clear()  # frees its tensors (add_lora still refers to the dict)

    vocab = next(t.shape[0] for k, t in gemma.state_dict().items() if k.endswith("embed_tokens.weight"))
    tokenizer = full_vocab_tokenizer(seed, vocab)
    text_encoder = {"spiece_model": torch.frombuffer(bytearray(tokenizer), dtype=torch.uint8)}
    keep_bf16 = gemma_bf16_linears(gemma.state_dict(), len(text_encoder["spiece_model"]), torch, draw, quant_tag,
                                   QuantizedTensor, TensorCoreNVFP4Layout)
    for name, meta in sorted(gemma.state_dict().items()):
        if name in keep_bf16:
            text_encoder[name] = draw(meta.shape).cpu()
        elif name.startswith("model.layers.") and name.endswith("proj.weight") and meta.ndim == 2:
            layer = name[: -len(".weight")]
            qdata, params = TensorCoreNVFP4Layout.quantize(draw(meta.shape))
            packed = QuantizedTensor(qdata, "TensorCoreNVFP4Layout", params).state_dict(f"{layer}.weight")
            text_encoder.update({k: v.cpu() for k, v in packed.items()})
            text_encoder[f"{layer}.input_scale"] = torch.tensor(1.0)
            text_encoder[f"{layer}.comfy_quant"] = quant_tag("nvfp4")
        elif name.endswith("norm.weight"):  # Gemma's RMSNorm adds 1: small values keep activations finite
            text_encoder[name] = draw(meta.shape, 0.01).cpu()
        else:
            text_encoder[name] = draw(meta.shape).cpu()
    written["text_encoder"] = _save(out, "text_encoder", text_encoder, None, digest=False)
    del text_encoder
    upscaler = {k: draw(v.shape).cpu() if v.is_floating_point() else v
                for k, v in sorted(LatentUpsampler.from_config(FULL_UPSCALER).state_dict().items())}
    written["upscaler"] = _save(out, "upscaler", upscaler, {"config": json.dumps(FULL_UPSCALER, sort_keys=True)},
                                digest=False)
    return written


def gemma_bf16_linears(state: dict, tokenizer_bytes: int, torch, draw, quant_tag, quantized, layout) -> set[str]:
    """The Gemma decoder-layer linears to keep bf16 so that the file reaches the real one's size: from the
    first and last layers inwards, each layer's linears in their order, none that would overshoot."""
    nvfp4_cost: dict[tuple, int] = {}  # bytes of one quantized linear by shape, from ComfyUI's own quantizer

    def cost(shape):
        if shape not in nvfp4_cost:
            qdata, params = layout.quantize(draw(shape))
            packed = quantized(qdata, "TensorCoreNVFP4Layout", params).state_dict("x.weight")
            nvfp4_cost[shape] = sum(v.nbytes for v in packed.values()) + 4 + quant_tag("nvfp4").nbytes + \
                (len(packed) + 1) * HEADER_BYTES_PER_TENSOR
        return nvfp4_cost[shape]

    linears, size = {}, tokenizer_bytes + HEADER_BYTES_PER_TENSOR
    for name, meta in state.items():
        shape = tuple(meta.shape)
        if name.startswith("model.layers.") and name.endswith("proj.weight") and meta.ndim == 2:
            linears[name] = shape
            size += cost(shape)
        else:
            size += meta.numel() * meta.element_size() + HEADER_BYTES_PER_TENSOR
    layers = 1 + max(int(n.split(".")[2]) for n in linears)
    order = [n for i in outside_in(layers) for n in linears if n.startswith(f"model.layers.{i}.")]
    return set(fill_to(REAL_BYTES["text_encoder"] - size,
                       [(n, 2 * math.prod(linears[n]) + HEADER_BYTES_PER_TENSOR - cost(linears[n])) for n in order]))


def build_controls(comfyui_dir: Path, out: Path, seed: int, full: bool) -> dict[str, dict]:
    """The preprocessors' files: Lotus-D (tiny or the real shape, fp16), the SD VAE (real shape, fp32) and the
    SDPose checkpoint (its UNet tiny or real, with the SD VAE, fp16)."""
    sys.path.insert(0, str(comfyui_dir))
    import comfy.cli_args
    import torch

    comfy.cli_args.args.cpu = True
    import comfy.ops
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    generator = torch.Generator().manual_seed(seed + 7)
    unet = UNetModel(**(FULL_LOTUS if full else TINY_LOTUS), dtype=torch.float32, device="cpu",
                     operations=comfy.ops.disable_weight_init)
    lotus = {k: v.to(torch.float16) for k, v in fill(unet, torch, generator).items()}
    del unet
    vae = fill(AutoencoderKL(ddconfig=SD_VAE, embed_dim=4), torch, generator)
    written = {"depth_model": _save(out, "depth_model", lotus, None, digest=not full),
               "depth_vae": _save(out, "depth_vae", vae, None, digest=not full)}
    del lotus
    unet = UNetModel(**(FULL_SDPOSE if full else TINY_SDPOSE), dtype=torch.float32, device="cpu",
                     operations=comfy.ops.disable_weight_init)
    sdpose = {f"model.diffusion_model.{k}": v.to(torch.float16) for k, v in fill(unet, torch, generator).items()}
    sdpose.update({f"first_stage_model.{k}": v.to(torch.float16) for k, v in vae.items()})
    written["pose_model"] = _save(out, "pose_model", sdpose, None, digest=not full)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui-dir", type=Path, default=os.environ.get("COMFYUI_DIR"), required=False)
    parser.add_argument("--out", type=Path, required=True, help="the volume root; files go to <out>/models/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny",
                        help="tiny: seconds on a CPU, for tests; full: the real shapes, for GPU benchmarks")
    parser.add_argument("--controls", action="store_true",
                        help="also the video-to-video preprocessors' files (Lotus-D, the SD VAE, SDPose)")
    args = parser.parse_args()
    if not args.comfyui_dir or not (args.comfyui_dir / "main.py").is_file():
        parser.error("--comfyui-dir (or COMFYUI_DIR) must point at a ComfyUI v0.26.2 checkout")
    started = time.monotonic()
    written = (build_full if args.size == "full" else build)(args.comfyui_dir, args.out, args.seed)
    if args.controls:
        written.update(build_controls(args.comfyui_dir, args.out, args.seed, args.size == "full"))
    (args.out / "models" / "tiny-manifest.json").write_text(json.dumps(written, indent=2))
    for role, info in written.items():
        print(f"{info['folder']}/{info['file']}: {info['size']} bytes, sha256 {info.get('sha256', 'not computed')}"
              + (f", {100 * (info['size'] / REAL_BYTES[role] - 1):+.2f} % against the real file"
                 if args.size == "full" else ""))
    print(f"{args.size} model files written in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
