"""The pairs stage: (sound chosen, hard negative) preference pairs with importance weights.

Reads the sample folder (shards, ``prompts.jsonl``, ``references.jsonl``), ``<verify>/verdicts.jsonl``
and the pool; writes ``pairs.jsonl``, ``stats.json``, ``weights.png`` and ``hardness.png``. The rules are
:mod:`tasks.pairing.pairs` (and docs/method.md); the branch's strategy is ``cfg.pairs.strategy`` (the
orchestration sets it per DPO branch).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tasks.common.records import write_jsonl
from tasks.pairing.pairs import (
    NoPairsError,
    SimilarityFn,
    build_pairs,
    no_pairs_message,
    plot_hardness,
    plot_weights,
    read_prompts,
    read_references,
    read_verdicts,
)
from tasks.verification.verdicts import read_problems, read_samples

VERSION = "2"  # bump when the pairing rules or weight formula change


def run(cfg, inputs: Mapping[str, Path], out: Path, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """The stage interface (``tasks.orchestration.stages``): inputs ``sample``, ``verify``, ``data``."""
    return run_pairs(cfg, cfg.pairs.strategy, inputs["sample"], inputs["verify"], inputs["data"], out)


def run_pairs(cfg, strategy: str, sample_dir: Path, verify_dir: Path, data_dir: Path, out: Path,
              similarity_fn: SimilarityFn | None = None) -> dict[str, Any]:
    """Stage function (see docs/stages.md): writes pairs, stats and plots; returns the stats.

    ``similarity_fn`` defaults to ``MathVerifier(cfg.verify).similarity``: the verifier's semantic channel
    (the embedding model of ``verify.embedding_model`` when set, else ``verifier.similarity``, lexical),
    whose texts are embedded in batches ahead of use (``MathVerifier.prefetch``).
    Raises :class:`NoPairsError` on zero pairs.
    """
    prefetch = None
    if similarity_fn is None:
        from verifier import MathVerifier

        verifier = MathVerifier(cfg.verify)
        similarity_fn, prefetch = verifier.similarity, verifier.prefetch
    samples = read_samples(sample_dir)
    verdicts = read_verdicts(Path(verify_dir) / "verdicts.jsonl")
    problems = read_problems(data_dir)
    pairs, stats = build_pairs(problems, samples, verdicts, cfg.pairs, strategy, similarity_fn,
                               prompts=read_prompts(sample_dir), references=read_references(sample_dir),
                               wrongness_weights=cfg.verify.wrongness, prefetch=prefetch)
    if not pairs:
        raise NoPairsError(no_pairs_message(stats, cfg.pairs))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "pairs.jsonl", pairs)
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    plot_weights(pairs, out / "weights.png")
    plot_hardness(pairs, out / "hardness.png")
    return stats
