"""GPU sampling throughput: vLLM vs HF ``generate`` on a Qwen2.5-1.5B-shaped random model, K = 8.

The same measurement as ``benchmarks/sampling_throughput.py`` (it reuses that script), with GPU
defaults: the ``qwen1.5b`` shape (hidden 1536, 28 layers, 12 heads, 2 KV heads, head_dim 128,
intermediate 8960, vocab 151936), bfloat16, 64 prompts × K = 8, 256 new tokens. vLLM needs a CUDA
vLLM environment at ``.venv-vllm`` (``make setup`` on a CUDA machine installs
``requirements/vllm-cuda.txt``); the wheel is too big to carry to a machine without network, so
``--hf-only`` runs the HF engine alone (also chosen automatically, with a note, when
``.venv-vllm/bin/python`` is missing)::

    .venv/bin/python benchmarks/gpu_sampling.py            # both engines
    .venv/bin/python benchmarks/gpu_sampling.py --hf-only --prompts 32 --max-tokens 128

Any other option of ``sampling_throughput.py`` passes through (``--batch-size``, ``--json``, ...).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import sampling_throughput  # noqa: E402

DEFAULTS = ["--models", "qwen1.5b", "--k", "8", "--prompts", "64", "--max-tokens", "256", "--batch-size", "16",
            "--temperature", "0.7"]


def main(argv: list[str]) -> int:
    import torch

    from conf.schema import VLLMConfig
    from tasks.generation.engine import vllm_python

    argv = list(argv)
    hf_only = "--hf-only" in argv
    if hf_only:
        argv.remove("--hf-only")
    if not torch.cuda.is_available():
        print("note: no CUDA device; this runs on CPU and will be very slow", file=sys.stderr)
    if not hf_only and not vllm_python(VLLMConfig()).exists():
        print(f"note: no vLLM environment at {vllm_python(VLLMConfig())}: HF engine only", file=sys.stderr)
        hf_only = True
    engines = ["--engines", "hf"] if hf_only else ["--engines", "vllm,hf"]
    return sampling_throughput.main(DEFAULTS + engines + argv)  # later options win


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
