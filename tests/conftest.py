"""Shared fixtures: offline environment and a very small Qwen2 model built in seconds."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)

TEXTS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "48/2 = <<48/2=24>>24 clips in May. 48+24 = <<48+24=72>>72 clips. #### 72",
    "Weng earns $12 an hour for babysitting. Yesterday, she did 50 minutes of babysitting.",
    "12/60 = <<12/60=0.2>>0.2 per minute. 0.2 x 50 = <<0.2*50=10>>10. #### 10",
    "Please reason step by step, and put your final answer within \\boxed{}.",
    "The answer is \\boxed{18}. 0 1 2 3 4 5 6 7 8 9 + - * / = ( ) $ % ,",
]


def build_test_model(path: Path, hidden: int = 128, layers: int = 2, vocab: int = 400, seed: int = 0) -> Path:
    """A random Qwen2ForCausalLM (head_dim 64, ChatML template, left padding) saved with save_pretrained.

    Same tokenizer and model builders as the tiny profile (``training.tiny``), without pretraining.
    """
    from conf.schema import TinyModelConfig
    from training.tiny import build_model, train_tokenizer

    tok = train_tokenizer(TEXTS * 4, vocab)
    cfg = TinyModelConfig(vocab_size=vocab, hidden_size=hidden, num_layers=layers, num_heads=hidden // 64,
                          num_kv_heads=hidden // 64, head_dim=64, intermediate_size=hidden * 2,
                          max_position_embeddings=512, seed=seed)
    model = build_model(tok, cfg)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """Folder of a random 2-layer Qwen2 model + tokenizer, built once per test session."""
    return build_test_model(tmp_path_factory.mktemp("tiny-model") / "model")


@pytest.fixture(scope="session")
def load_script():
    """``load_script("name")``: ``scripts/name.py`` imported as a module (the scripts are no package)."""
    import importlib.util

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
