"""Load transformers ``save_pretrained`` checkpoints (ViLT, CLIP) into vlpbench modules.

The config is read with transformers' config classes (``save_pretrained`` writes only non-default
values), the weights straight from the safetensors / ``pytorch_model.bin`` files, and mapped by name:
separate q / k / v projections are concatenated into our fused ``qkv`` ([q; k; v] along the output
dimension), CLIP's position table becomes a parameter, and so on.  Every tensor of our module must be
filled, and every tensor of the checkpoint's model must be used (ViLT task heads included), or the
load fails naming what is missing.

``load_vilt(dir)`` -> ``VLPModel(PatchEmbedder, BertEmbedder, SingleStreamInteraction)``;
``load_clip(dir)`` -> ``VLPModel(PatchEmbedder, ClipTextEmbedder, DualEncoderInteraction)``.  The model's
``tokenizer`` attribute holds the directory's tokenizer, or None when it has none.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import nn

from vlpbench.embedders.patch import PatchEmbedder
from vlpbench.embedders.text import BertEmbedder, ClipTextEmbedder, load_tokenizer
from vlpbench.errors import VlpbenchError

from .compose import VLPModel
from .dual_encoder import DualEncoderInteraction
from .heads import MLMHead, NLVR2Head, RetrievalHead, VQAHead
from .single_stream import SingleStreamInteraction

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json")


def _read_json(path: str, what: str, label: str = "file") -> Any:
    """The JSON in ``path``; a truncated or binary file is one error naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VlpbenchError(f"{label} {path!r} is not valid JSON ({exc}; truncated?); accepted: {what}") from None


def _check_safetensors(path: str) -> None:
    """Refuse a truncated or non-safetensors file from its header alone (8-byte length, JSON, offsets)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        header = f.read(n) if 0 < n <= size - 8 else b""
    try:
        meta = json.loads(header.decode("utf-8")) if header else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        meta = None
    ends = [
        t["data_offsets"][1]
        for k, t in (meta or {}).items()
        if k != "__metadata__"
        and isinstance(t, dict)
        and isinstance(t.get("data_offsets"), list)
        and len(t["data_offsets"]) == 2
    ]
    if not isinstance(meta, dict) or 8 + n + max(ends, default=0) > size:
        raise VlpbenchError(
            f"weight file {path!r} cannot be read (truncated or not a safetensors file, {size} bytes); "
            "accepted: a complete model.safetensors as save_pretrained writes it"
        )


def weight_files(directory: str) -> list[str]:
    """The weight files of a save_pretrained directory (single or sharded safetensors, or pytorch_model.bin)."""
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        path = os.path.join(directory, index)
        if os.path.isfile(path):
            index_json = _read_json(path, "a weight index with a weight_map")
            weight_map = index_json.get("weight_map") if isinstance(index_json, dict) else None
            if not isinstance(weight_map, dict):
                raise VlpbenchError(f"{path!r} has no weight_map; accepted: a weight index with a weight_map")
            return sorted(set(weight_map.values()))
    return [
        name for name in ("model.safetensors", "pytorch_model.bin") if os.path.isfile(os.path.join(directory, name))
    ][:1]


def verify_checkpoint(directory: str | os.PathLike) -> str:
    """Check a checkpoint directory without loading it (config.json, the weight files' headers) -> model_type."""
    directory = os.fspath(directory)
    kind = checkpoint_type(directory)
    files = weight_files(directory)
    if not files:
        raise VlpbenchError(
            f"no weights in {directory!r}; accepted: model.safetensors, a sharded "
            "model.safetensors.index.json, or pytorch_model.bin"
        )
    for name in files:
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            raise VlpbenchError(f"weight shard {name!r} listed in the index is missing from {directory!r}")
        if name.endswith(".safetensors"):
            _check_safetensors(path)
    return kind


def read_config_json(directory: str, what: str) -> dict[str, Any]:
    """``directory/config.json`` as a dict; an error naming the file unless it is a complete JSON object."""
    if not os.path.isdir(directory):
        raise VlpbenchError(f"checkpoint directory {directory!r} does not exist; accepted: {what}")
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise VlpbenchError(f"no config.json in {directory!r}; accepted: {what}")
    data = _read_json(path, "the config.json that save_pretrained writes", label="config file")
    if not isinstance(data, dict):
        raise VlpbenchError(f"config file {path!r} holds a {type(data).__name__}; accepted: a JSON object")
    return data


def _model_type(directory: str, accepted: tuple[str, ...]) -> str:
    """The ``model_type`` in ``directory/config.json``; an error naming the directory unless it is accepted."""
    what = f"a transformers save_pretrained directory of model_type {', '.join(accepted)}"
    model_type = read_config_json(directory, what).get("model_type")
    if model_type not in accepted:
        raise VlpbenchError(
            f"{directory!r} holds a {model_type!r} checkpoint; accepted: model_type {', '.join(map(repr, accepted))}"
        )
    return model_type


def _read_config(directory: str, expected: str) -> Any:
    _model_type(directory, (expected,))
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise VlpbenchError(
            f"config file {os.path.join(directory, 'config.json')!r} cannot be read by transformers "
            f"({type(e).__name__}: {str(e)[:200]}); accepted: a {expected} config.json"
        ) from None


def _load_weight_file(path: str) -> dict[str, torch.Tensor]:
    """One safetensors / torch file -> tensors; an error naming the file if it is truncated or not a weight file."""
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors' SafetensorError, pickle / zip errors: the file, not the code, is at fault
        raise VlpbenchError(
            f"weight file {path!r} cannot be read ({type(e).__name__}: {str(e)[:160]}; truncated?); "
            "accepted: a complete safetensors file or torch.save'd state dict"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise VlpbenchError(
            f"weight file {path!r} holds a {type(state).__name__}, not a state dict; accepted: a "
            "dict of tensor names to tensors"
        )
    return state


def read_state_dict(directory: str) -> dict[str, torch.Tensor]:
    """All tensors of a save_pretrained directory (single or sharded safetensors, or pytorch_model.bin)."""
    files = weight_files(directory)
    if not files:
        raise VlpbenchError(
            f"no weights in {directory!r}; accepted: model.safetensors, a sharded "
            "model.safetensors.index.json, or pytorch_model.bin"
        )
    state: dict[str, torch.Tensor] = {}
    for name in files:
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            raise VlpbenchError(f"weight shard {name!r} listed in the index is missing from {directory!r}")
        if name.endswith(".safetensors"):
            _check_safetensors(path)
        state.update(_load_weight_file(path))
    return state


def _strip(state: dict[str, torch.Tensor], prefix: str, probe: str) -> dict[str, torch.Tensor]:
    """Drop a task-model prefix (``vilt.``) when the bare model's ``probe`` key is not at top level."""
    if probe in state or not any(k.startswith(prefix) for k in state):
        return state
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


class _Mapper:
    """Copies checkpoint tensors into a module's state dict, tracking what was used and what was filled."""

    def __init__(self, state: dict[str, torch.Tensor], directory: str):
        self.state, self.directory = state, directory
        self.used: set = set()
        self.out: dict[str, torch.Tensor] = {}

    def get(self, key: str) -> torch.Tensor:
        if key not in self.state:
            raise VlpbenchError(
                f"checkpoint in {self.directory!r} lacks tensor {key!r}; the weights do not match "
                "the model type in config.json"
            )
        self.used.add(key)
        return self.state[key]

    def put(self, ours: str, *keys: str, fn=None) -> None:
        tensors = [self.get(k) for k in keys]
        self.out[ours] = (
            fn(*tensors) if fn is not None else (tensors[0] if len(tensors) == 1 else torch.cat(tensors, 0))
        )

    def linear(self, ours: str, theirs: str, bias: bool = True) -> None:
        self.put(f"{ours}.weight", f"{theirs}.weight")
        if bias:
            self.put(f"{ours}.bias", f"{theirs}.bias")

    def qkv(self, ours: str, q: str, k: str, v: str) -> None:
        self.put(f"{ours}.weight", f"{q}.weight", f"{k}.weight", f"{v}.weight")  # [3*D, D] = [q; k; v]
        self.put(f"{ours}.bias", f"{q}.bias", f"{k}.bias", f"{v}.bias")

    def load_into(self, module: nn.Module, prefix: str) -> None:
        own = {k[len(prefix) :]: v for k, v in self.out.items() if k.startswith(prefix)}
        missing, unexpected = module.load_state_dict(own, strict=False)
        if missing or unexpected:
            raise VlpbenchError(
                f"checkpoint in {self.directory!r} does not fill {type(module).__name__}: "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}"
            )

    def check_all_used(self, prefixes: tuple[str, ...]) -> None:
        left = sorted(k for k in self.state if k.startswith(prefixes) and k not in self.used)
        if left:
            raise VlpbenchError(f"checkpoint in {self.directory!r} has tensors this loader does not map: {left[:5]}")


def _encoder(m: _Mapper, ours: str, depth: int, names: dict[str, str], theirs: str) -> None:
    """Map ``depth`` transformer layers: names maps our sub-names to the checkpoint's (with {i} = layer)."""
    for i in range(depth):
        t = {k: f"{theirs}.{v.format(i=i)}" for k, v in names.items()}
        o = f"{ours}.layers.{i}"
        m.qkv(f"{o}.attn.qkv", t["q"], t["k"], t["v"])
        for our_name in ("attn.proj", "ln1", "ln2", "mlp.fc1", "mlp.fc2"):
            m.linear(f"{o}.{our_name}", t[our_name])


def _attach_tokenizer(model: VLPModel, directory: str) -> VLPModel:
    has_tok = any(os.path.isfile(os.path.join(directory, f)) for f in TOKENIZER_FILES)
    model.tokenizer = load_tokenizer(directory) if has_tok else None
    return model


# ---------------------------------------------------------------------------------------------------------------
VILT_LAYER = {
    "q": "layer.{i}.attention.attention.query",
    "k": "layer.{i}.attention.attention.key",
    "v": "layer.{i}.attention.attention.value",
    "attn.proj": "layer.{i}.attention.output.dense",
    "ln1": "layer.{i}.layernorm_before",
    "ln2": "layer.{i}.layernorm_after",
    "mlp.fc1": "layer.{i}.intermediate.dense",
    "mlp.fc2": "layer.{i}.output.dense",
}


# transformers ViLT class (config.json "architectures") -> the vlpbench head it carries (None: the bare model)
VILT_HEADS = {
    "ViltModel": None,
    "ViltForQuestionAnswering": "vqa",
    "ViltForImagesAndTextClassification": "nlvr2",
    "ViltForImageAndTextRetrieval": "retrieval",
    "ViltForMaskedLM": "mlm",
}


def _vilt_class(cfg: Any, directory: str) -> str:
    names = list(getattr(cfg, "architectures", None) or ["ViltModel"])
    if names[0] not in VILT_HEADS:
        raise VlpbenchError(
            f"ViLT checkpoint in {directory!r} is a {names[0]!r}; accepted architectures: {', '.join(VILT_HEADS)}"
        )
    return names[0]


def _vilt_head(m: _Mapper, task: str | None, cfg: Any, directory: str) -> nn.Module | None:
    """The task head of a ViLT task checkpoint, filled from its tensors (``m`` maps the full state dict)."""
    d = cfg.hidden_size
    if task is None:
        return None
    if task == "vqa":
        head = VQAHead(d, cfg.num_labels)
    elif task == "nlvr2":
        if getattr(cfg, "num_images", 2) != 2 or cfg.modality_type_vocab_size < 3:
            raise VlpbenchError(
                f"ViLT NLVR2 checkpoint in {directory!r} has num_images={cfg.num_images}, "
                f"modality_type_vocab_size={cfg.modality_type_vocab_size}; accepted: 2 images and "
                "at least 3 modality types"
            )
        head = NLVR2Head(d, cfg.num_labels)
    elif task == "retrieval":
        head = RetrievalHead(d)
    else:
        head = MLMHead(d, cfg.vocab_size, eps=cfg.layer_norm_eps)
    if task in ("vqa", "nlvr2"):
        for i in (0, 1, 3):  # Linear, LayerNorm, (GELU), Linear
            m.linear(f"h.classifier.{i}", f"classifier.{i}")
    elif task == "retrieval":
        m.linear("h.rank_output", "rank_output")
    else:
        m.linear("h.dense", "mlm_score.transform.dense")
        m.linear("h.norm", "mlm_score.transform.LayerNorm")
        # the decoder is tied to the word embeddings; save_pretrained then stores only one of them
        tied = (
            "mlm_score.decoder.weight"
            if "mlm_score.decoder.weight" in m.state
            else "vilt.embeddings.text_embeddings.word_embeddings.weight"
        )
        m.put("h.decoder.weight", tied)
        m.put("h.decoder.bias", "mlm_score.decoder.bias")
    m.check_all_used(("classifier.", "rank_output.", "mlm_score."))
    m.load_into(head, "h.")
    return head


def _labels(cfg: Any, task: str | None) -> list[str] | None:
    """The answer of each VQA class index (config.id2label), else None."""
    if task != "vqa":
        return None
    return [str(cfg.id2label[i]) for i in range(cfg.num_labels)]


def load_vilt(
    directory: str | os.PathLike,
    *,
    image_size: tuple[int, int] = (384, 640),
    text_len: int | None = None,
    max_image_len: int | None = None,
) -> VLPModel:
    """A ViLT checkpoint (ViltModel or a Vilt* task model) -> VLPModel(patch, BERT embed, single-stream, head).

    image_size: the input size latency inputs use (a multiple of the patch size; any other multiple, and padded
    batches with a pixel_mask, run too); text_len: latency-input length (default: the checkpoint's
    max_position_embeddings); max_image_len: patch sampling (default: the checkpoint's max_image_length, -1 = all).
    Task checkpoints (``VILT_HEADS``) get their head; the model's ``task`` says which (None for ViltModel),
    ``labels`` holds a VQA checkpoint's answers by class index, ``hf_class`` the transformers class.
    """
    directory = os.fspath(directory)
    cfg = _read_config(directory, "vilt")
    hf_class = _vilt_class(cfg, directory)
    full = read_state_dict(directory)
    state = _strip(full, "vilt.", "embeddings.cls_token")
    d, p = cfg.hidden_size, cfg.patch_size
    grid = cfg.image_size // p
    visual = PatchEmbedder(
        image_size,
        p,
        d,
        in_chans=cfg.num_channels,
        pos_grid=(grid, grid),
        pos_interp="bilinear",
        conv_bias=True,
        max_image_len=cfg.max_image_length if max_image_len is None else max_image_len,
    )
    text = BertEmbedder(
        cfg.vocab_size,
        d,
        cfg.max_position_embeddings,
        text_len=text_len,
        type_vocab_size=cfg.type_vocab_size,
        pad_token_id=cfg.pad_token_id or 0,
        eps=cfg.layer_norm_eps,
    )
    if cfg.hidden_act != "gelu" or not cfg.qkv_bias:
        raise VlpbenchError(
            f"ViLT checkpoint in {directory!r} uses hidden_act={cfg.hidden_act!r}, "
            f"qkv_bias={cfg.qkv_bias}; accepted: 'gelu' with qkv_bias=True"
        )
    inter = SingleStreamInteraction(
        visual.output_spec(),
        text.output_spec(),
        d,
        cfg.num_hidden_layers,
        cfg.num_attention_heads,
        cfg.intermediate_size,
        act="gelu",
        eps=cfg.layer_norm_eps,
        modality_types=cfg.modality_type_vocab_size,
    )
    m = _Mapper(state, directory)
    m.linear("v.proj", "embeddings.patch_embeddings.projection")
    m.put("v.cls_token", "embeddings.cls_token")
    m.put("v.pos_embed", "embeddings.position_embeddings")
    te = "embeddings.text_embeddings"
    m.put("t.word_embeddings.weight", f"{te}.word_embeddings.weight")
    m.put("t.position_embeddings.weight", f"{te}.position_embeddings.weight")
    m.put("t.token_type_embeddings.weight", f"{te}.token_type_embeddings.weight")
    m.linear("t.norm", f"{te}.LayerNorm")
    m.put("i.modality.weight", "embeddings.token_type_embeddings.weight")
    _encoder(m, "i.encoder", cfg.num_hidden_layers, VILT_LAYER, "encoder")
    m.linear("i.norm", "layernorm")
    m.linear("i.pooler", "pooler.dense")
    m.check_all_used(("embeddings.", "encoder.", "layernorm.", "pooler."))
    for module, prefix in ((visual, "v."), (text, "t."), (inter, "i.")):
        m.load_into(module, prefix)
    task = VILT_HEADS[hf_class]
    head = _vilt_head(_Mapper(full, directory), task, cfg, directory)
    model = _attach_tokenizer(VLPModel(visual, text, inter, head).eval(), directory)
    model.family, model.task, model.hf_class, model.labels = "vilt", task, hf_class, _labels(cfg, task)
    return model


# ---------------------------------------------------------------------------------------------------------------
CLIP_LAYER = {
    "q": "layers.{i}.self_attn.q_proj",
    "k": "layers.{i}.self_attn.k_proj",
    "v": "layers.{i}.self_attn.v_proj",
    "attn.proj": "layers.{i}.self_attn.out_proj",
    "ln1": "layers.{i}.layer_norm1",
    "ln2": "layers.{i}.layer_norm2",
    "mlp.fc1": "layers.{i}.mlp.fc1",
    "mlp.fc2": "layers.{i}.mlp.fc2",
}
CLIP_ACTS = {"quick_gelu": "quick_gelu", "gelu": "gelu"}


def load_clip(
    directory: str | os.PathLike, *, text_len: int | None = None, image_size: tuple[int, int] | None = None
) -> VLPModel:
    """A CLIP checkpoint (CLIPModel) -> VLPModel(patch + ln_pre, CLIP text tower, dual encoder).

    image_size (H, W): another input size than the checkpoint's (non-square too); the position embeddings are
    then resized as transformers' ``interpolate_pos_encoding=True`` does (bicubic).  N images and M texts
    give logits_per_image [N, M] in one call."""
    directory = os.fspath(directory)
    cfg = _read_config(directory, "clip")
    vc, tc = cfg.vision_config, cfg.text_config
    for sub in (vc, tc):
        if sub.hidden_act not in CLIP_ACTS:
            raise VlpbenchError(
                f"CLIP checkpoint in {directory!r} uses hidden_act={sub.hidden_act!r}; accepted: {', '.join(CLIP_ACTS)}"
            )
    state = read_state_dict(directory)
    grid = vc.image_size // vc.patch_size
    native = (vc.image_size, vc.image_size)
    size = native if image_size is None else tuple(int(v) for v in image_size)
    visual = PatchEmbedder(
        size,
        vc.patch_size,
        vc.hidden_size,
        in_chans=vc.num_channels,
        pos_grid=(grid, grid),
        pos_interp="none" if size == native else "bicubic",
        conv_bias=False,
        pre_norm=True,
        norm_eps=vc.layer_norm_eps,
    )
    # transformers pools at argmax(input_ids) for legacy configs (eos_token_id == 2), else at the first EOS id
    eos = (
        tc.eos_token_id
        if isinstance(tc.eos_token_id, int) and 0 <= tc.eos_token_id < tc.vocab_size
        else tc.vocab_size - 1
    )
    text = ClipTextEmbedder(
        tc.vocab_size,
        tc.hidden_size,
        tc.num_hidden_layers,
        tc.num_attention_heads,
        tc.intermediate_size,
        act=CLIP_ACTS[tc.hidden_act],
        context_len=tc.max_position_embeddings,
        text_len=text_len,
        eps=tc.layer_norm_eps,
        proj_dim=cfg.projection_dim,
        eot_token_id=eos,
        pool="argmax" if tc.eos_token_id == 2 else "eot",
    )
    inter = DualEncoderInteraction(
        visual.output_spec(),
        text.output_spec(),
        vc.hidden_size,
        vc.num_hidden_layers,
        vc.num_attention_heads,
        vc.intermediate_size,
        act=CLIP_ACTS[vc.hidden_act],
        eps=vc.layer_norm_eps,
        embed_dim=cfg.projection_dim,
    )
    m = _Mapper(state, directory)
    ve, tm = "vision_model.embeddings", "text_model"
    m.put("v.proj.weight", f"{ve}.patch_embedding.weight")
    m.put("v.cls_token", f"{ve}.class_embedding", fn=lambda t: t.reshape(1, 1, -1))
    m.put("v.pos_embed", f"{ve}.position_embedding.weight", fn=lambda t: t[None])  # [N+1, D] -> [1, N+1, D]
    m.linear("v.norm", "vision_model.pre_layrnorm")
    _encoder(m, "i.tower", vc.num_hidden_layers, CLIP_LAYER, "vision_model.encoder")
    m.linear("i.ln_post", "vision_model.post_layernorm")
    m.linear("i.visual_projection", "visual_projection", bias=False)
    m.put("i.logit_scale", "logit_scale")
    m.put("t.token_embedding.weight", f"{tm}.embeddings.token_embedding.weight")
    m.put("t.position_embedding", f"{tm}.embeddings.position_embedding.weight")
    _encoder(m, "t.encoder", tc.num_hidden_layers, CLIP_LAYER, f"{tm}.encoder")
    m.linear("t.ln_final", f"{tm}.final_layer_norm")
    m.linear("t.text_projection", "text_projection", bias=False)
    m.check_all_used(("vision_model.", "text_model.", "visual_projection.", "text_projection.", "logit_scale"))
    for module, prefix in ((visual, "v."), (text, "t."), (inter, "i.")):
        m.load_into(module, prefix)
    model = _attach_tokenizer(VLPModel(visual, text, inter).eval(), directory)
    model.family, model.task, model.hf_class, model.labels = "clip", "itc", "CLIPModel", None
    return model


# ---------------------------------------------------------------------------------------------------------------
TIMM_LAYER = {
    "attn.qkv": "blocks.{i}.attn.qkv",
    "attn.proj": "blocks.{i}.attn.proj",
    "ln1": "blocks.{i}.norm1",
    "ln2": "blocks.{i}.norm2",
    "mlp.fc1": "blocks.{i}.mlp.fc1",
    "mlp.fc2": "blocks.{i}.mlp.fc2",
}
TIMM_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def _timm_source(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A timm ViT checkpoint: a state-dict file, or a folder with model.safetensors / pytorch_model.bin and
    optionally timm's config.json ({"architecture": ...}) -> (tensors, config)."""
    accepted = (
        "a timm.create_model(...).state_dict() file (.pth / .bin / .safetensors) or a folder with "
        f"{' / '.join(TIMM_WEIGHT_FILES)}"
    )
    if os.path.isfile(path):
        return _load_weight_file(path), {}
    if not os.path.isdir(path):
        raise VlpbenchError(f"timm checkpoint {path!r} does not exist; accepted: {accepted}")
    weights = next((os.path.join(path, f) for f in TIMM_WEIGHT_FILES if os.path.isfile(os.path.join(path, f))), None)
    if weights is None:
        raise VlpbenchError(f"no weights in {path!r}; accepted: {accepted}")
    cfg = read_config_json(path, accepted) if os.path.isfile(os.path.join(path, "config.json")) else {}
    return _load_weight_file(weights), cfg


def _timm_layout(cfg: dict[str, Any], width: int) -> tuple[int, float]:
    """(heads, LayerNorm eps): from timm's own model when config.json names its architecture, else ViT's
    defaults (64-wide heads, eps 1e-6), which a state dict alone cannot tell."""
    arch = cfg.get("architecture")
    if not arch:
        return max(1, width // 64), 1e-6
    import timm

    try:
        with torch.device("meta"):
            ref = timm.create_model(arch, pretrained=False, num_classes=0, **(cfg.get("model_args") or {}))
    except (RuntimeError, ValueError, TypeError, KeyError) as e:
        raise VlpbenchError(
            f"timm cannot build architecture {arch!r} named in config.json ({e}); accepted: a timm "
            "ViT name such as vit_base_patch32_384"
        ) from None
    return ref.blocks[0].attn.num_heads, ref.blocks[0].norm1.eps


def load_timm_vit(
    path: str | os.PathLike,
    *,
    image_size: tuple[int, int] | None = None,
    num_heads: int | None = None,
    text: nn.Module | None = None,
) -> VLPModel:
    """A timm ViT checkpoint -> VLPModel(patch projection, text embedder, single-stream interaction), ViLT's
    initialisation: the patch projection, class token, position grid and transformer layers come from the ViT
    (timm's fused ``qkv`` maps as is); the text embedder (``text``; default BERT-base embeddings at ViLT's 40
    positions, random) and the modality-type embeddings are not in a ViT and keep their initialisation.

    ``interaction.forward_image(visual(pixel_values))`` is the ViT's ``forward_features``.  image_size:
    default the ViT's own (square) size; others interpolate the position grid bilinearly as ViLT does.
    """
    path = os.fspath(path)
    state, cfg = _timm_source(path)
    need = ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "norm.weight")
    missing = [k for k in need if k not in state]
    if missing:
        raise VlpbenchError(
            f"{path!r} is not a timm VisionTransformer state dict (no {', '.join(missing)}); "
            "accepted: timm.create_model('vit_...').state_dict()"
        )
    width, chans, p, _ = state["patch_embed.proj.weight"].shape
    grid = int(round((state["pos_embed"].shape[1] - 1) ** 0.5))
    if grid * grid + 1 != state["pos_embed"].shape[1]:
        raise VlpbenchError(
            f"{path!r}: pos_embed has {state['pos_embed'].shape[1]} rows; accepted: a class-token "
            "row plus a square grid (timm's default class_token=True, no_embed_class=False)"
        )
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    heads, eps = _timm_layout(cfg, width)
    heads = num_heads or heads
    mlp = state["blocks.0.mlp.fc1.weight"].shape[0]
    size = tuple(image_size) if image_size is not None else (grid * p, grid * p)
    visual = PatchEmbedder(size, p, width, in_chans=chans, pos_grid=(grid, grid), pos_interp="bilinear", conv_bias=True)
    text = text if text is not None else BertEmbedder(30522, width, 40)
    inter = SingleStreamInteraction(
        visual.output_spec(), text.output_spec(), width, depth, heads, mlp, act="gelu", eps=eps
    )
    m = _Mapper(state, path)
    m.linear("v.proj", "patch_embed.proj")
    m.put("v.cls_token", "cls_token")
    m.put("v.pos_embed", "pos_embed")
    for i in range(depth):  # timm fuses q, k, v as [q; k; v] too
        for ours, theirs in TIMM_LAYER.items():
            m.linear(f"i.encoder.layers.{i}.{ours}", theirs.format(i=i))
    m.linear("i.norm", "norm")
    m.check_all_used(("cls_token", "pos_embed", "patch_embed.", "blocks.", "norm."))
    m.load_into(visual, "v.")
    own = {k[2:]: v for k, v in m.out.items() if k.startswith("i.")}
    missing, unexpected = inter.load_state_dict(own, strict=False)
    # only what ViLT adds to a ViT is left at its initialisation
    left = [k for k in missing if not k.startswith(("modality.", "pooler.", "text_proj.", "visual_proj."))]
    if left or unexpected:
        raise VlpbenchError(
            f"timm checkpoint {path!r} does not fill the single-stream interaction: missing "
            f"{left[:5]}, unexpected {unexpected[:5]}"
        )
    model = VLPModel(visual, text, inter).eval()
    model.family, model.task, model.hf_class, model.labels, model.tokenizer = (
        "timm",
        None,
        cfg.get("architecture"),
        None,
        None,
    )
    return model


__all__ = ["load_vilt", "load_clip", "load_timm_vit", "read_state_dict"]


LOADERS = {"vilt": load_vilt, "clip": load_clip}


def checkpoint_type(directory: str | os.PathLike) -> str:
    """The ``model_type`` of a transformers checkpoint directory, if vlpbench can load it."""
    return _model_type(os.fspath(directory), tuple(LOADERS))


def load_hf_checkpoint(
    directory: str | os.PathLike, *, image_size: tuple[int, int] | None = None, text_len: int | None = None
) -> VLPModel:
    """Load a ViLT or CLIP transformers checkpoint directory, choosing the loader by its ``model_type``."""
    kind = checkpoint_type(directory)
    if kind == "vilt":
        return load_vilt(directory, text_len=text_len, **({"image_size": tuple(image_size)} if image_size else {}))
    return load_clip(directory, text_len=text_len, image_size=image_size)
