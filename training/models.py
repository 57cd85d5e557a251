"""Model and tokenizer loading for training: dtype, 4-bit NF4 (QLoRA), LoRA configs, model refs.

Every trainer in this package loads its model through :func:`load_model` and its LoRA settings
through :func:`peft_lora_config`, so QLoRA is one switch (``model.quantization: 4bit``)::

    tok = load_tokenizer("artifacts/base/1a2b/model")
    model = load_model("artifacts/base/1a2b/model", dtype="auto", quantization="4bit", for_training=True)
    lora = peft_lora_config(LoraConfig(r=16, alpha=32, dropout=0.05))   # conf.schema.LoraConfig

A ``ModelRef`` (``model.json``, see :mod:`training.modelref`) is ``base`` + optional ``adapter`` and
``merged``; :func:`materialize_ref` turns any ref into one folder of plain weights (the merged folder
when there is one, else base + adapter merged on the fly), which is what DPO starts from.

4-bit loading works on CPU too with bitsandbytes >= 0.49 (compute dtype float32 there). On CPU,
bitsandbytes repacks 4-bit weights for inference on the first eval-mode no-grad forward (``generate``,
a DPO reference pass), which breaks backward; models loaded ``for_training`` switch that off
(:func:`keep_trainable_4bit_layout`). Otherwise, load the model again between sampling and training.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from training.modelref import ModelRef

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

if TYPE_CHECKING:  # conf (pydantic) is not needed at run time: benchmarks import this alone
    from conf.schema import LoraConfig


def resolve_dtype(name: str, device: str | None = None) -> torch.dtype:
    """``"auto"`` -> bfloat16 on a CUDA device that supports it, else float32; other names map directly."""
    if name != "auto":
        if name not in DTYPES:
            raise ValueError(f"unknown dtype {name!r}; expected 'auto' or one of {sorted(DTYPES)}")
        return DTYPES[name]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def mixed_precision_flags(dtype: torch.dtype) -> dict[str, bool]:
    """``bf16``/``fp16`` TrainingArguments for a compute dtype (mixed precision only on CUDA)."""
    on_cuda = torch.cuda.is_available()
    return {"bf16": on_cuda and dtype == torch.bfloat16, "fp16": on_cuda and dtype == torch.float16}


def bnb_4bit_config(compute_dtype: torch.dtype) -> Any:
    """QLoRA's quantization: NF4 weights, double quantization, matmuls in ``compute_dtype``."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def peft_lora_config(cfg: LoraConfig) -> Any:
    """``conf.schema.LoraConfig`` -> ``peft.LoraConfig`` for a causal LM (the LM head is never adapted)."""
    from peft import LoraConfig as PeftLoraConfig

    targets = cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
    return PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_tokenizer(
    path: str | Path,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    padding_side: str = "left",
) -> Any:
    """The tokenizer of a model folder or hub id, with a pad token (EOS when it has none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), revision=revision, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    if not getattr(tok, "chat_template", None):
        raise ValueError(f"tokenizer at {path}: no chat_template; SFT/DPO prompts need one")
    return tok


def is_quantized(model: Any) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def keep_trainable_4bit_layout(model: Any) -> int:
    """Stop bitsandbytes from repacking 4-bit weights into its CPU inference layout.

    On CPUs with AVX512-BF16, ``Linear4bit.forward`` in eval mode without grad (a reference pass,
    ``generate``) converts the weights to an inference-only packed format, after which backward fails
    ("a view of a leaf Variable ... in-place"). Training models keep the trainable layout; returns the
    number of layers changed.
    """
    n = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n


def load_model(
    path: str | Path,
    *,
    dtype: str = "auto",
    quantization: str = "none",
    for_training: bool = False,
    gradient_checkpointing: bool = False,
    revision: str | None = None,
    trust_remote_code: bool = False,
    device_map: Any = None,
) -> Any:
    """Load a causal LM. ``quantization="4bit"`` loads NF4 weights via bitsandbytes (QLoRA) and, when
    ``for_training``, runs PEFT's ``prepare_model_for_kbit_training`` (norms in fp32, input grads)."""
    from transformers import AutoModelForCausalLM

    torch_dtype = resolve_dtype(dtype)
    kwargs: dict[str, Any] = {
        "dtype": torch_dtype,
        "revision": revision,
        "trust_remote_code": trust_remote_code,
    }
    if quantization == "4bit":
        kwargs["quantization_config"] = bnb_4bit_config(torch_dtype)
        if device_map is None and torch.cuda.is_available():
            device_map = {"": torch.cuda.current_device()}
    elif quantization != "none":
        raise ValueError(f"unknown quantization {quantization!r}; expected 'none' or '4bit'")
    if device_map is not None:
        kwargs["device_map"] = device_map
    model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    if for_training:
        model.config.use_cache = False
        if is_quantized(model):
            from peft import prepare_model_for_kbit_training

            keep_trainable_4bit_layout(model)

            model = prepare_model_for_kbit_training(
                model,
                use_gradient_checkpointing=gradient_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
            )
    return model


def merge_adapter(
    base: str | Path,
    adapter: str | Path,
    out: str | Path,
    *,
    dtype: str = "auto",
    tokenizer_from: str | Path | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> Path:
    """Load ``base`` in full precision (never 4-bit), merge ``adapter`` into it, save weights + tokenizer."""
    from peft import PeftModel

    out = Path(out)
    model = load_model(base, dtype=dtype, revision=revision, trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(out)
    tok_src = tokenizer_from or (adapter if (Path(adapter) / "tokenizer_config.json").is_file() else base)
    load_tokenizer(
        tok_src, revision=None if tok_src != base else revision, trust_remote_code=trust_remote_code
    ).save_pretrained(out)
    return out


def materialize_ref(
    ref: ModelRef,
    out: str | Path,
    *,
    dtype: str = "auto",
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> str:
    """A folder (or hub id) of plain weights for ``ref``: ``merged`` if saved, ``base`` if there is no
    adapter, else base + adapter merged into ``out`` (written only when needed)."""
    if ref.merged:
        if not Path(ref.merged).is_dir():
            raise FileNotFoundError(f"model.json names merged weights at {ref.merged}, which do not exist")
        return ref.merged
    if not ref.adapter:
        return ref.base
    out = Path(out)
    if not (out / "config.json").is_file():
        merge_adapter(
            ref.base, ref.adapter, out, dtype=dtype, revision=revision, trust_remote_code=trust_remote_code
        )
    return str(out)


def materialize_input(ref: ModelRef, out: str | Path, model_cfg: Any) -> str:
    """The plain weights a training stage starts from: :func:`materialize_ref` into ``out/input_model``
    with the profile's ``model.dtype``, ``revision`` and ``trust_remote_code``."""
    return materialize_ref(ref, Path(out) / "input_model", dtype=model_cfg.dtype, revision=model_cfg.revision,
                           trust_remote_code=model_cfg.trust_remote_code)


def count_parameters(model: Any) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_params": int(trainable), "total_params": int(total)}
