"""Generation: the HF and vLLM engines (vLLM in a worker process of .venv-vllm), and the sample stage's shards."""
