"""The base stage: reference a pretrained model, or build the tiny one from scratch.

With ``model.build_from_scratch`` the tokenizer and a small Qwen2 are trained on the data stage's
``pretrain.txt`` (see ``training.tiny``) and saved under ``out/model/``; otherwise nothing is
downloaded and ``model.json`` just names ``model.name_or_path``. ``model.json`` of a built model::

    {"base": "model", "adapter": null, "merged": null}

Metrics of a build: ``params``, ``steps``, ``first_loss``, ``final_loss``, ``seconds``,
``cpu_seconds``, ``tokens``, ``vocab``, ``blocks``.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conf.schema import Config
from tasks.corpus.loaders import PRETRAIN_FILE
from training.modelref import write_model_ref

VERSION = "2"


def run(cfg: Config, inputs: Mapping[str, Path], out: Path, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """The stage interface (``tasks.orchestration.stages``): input ``data`` (its ``pretrain.txt``)."""
    return run_base(cfg, inputs.get("data"), out)


@contextmanager
def pretrain_progress(max_steps: int, window: int = 50, **kwargs: Any) -> Iterator[tuple[Callable[[int, float], None], Any]]:
    """A ``progress(step, loss)`` callback for :func:`training.tiny.pretrain` driving a
    :class:`tasks.common.progress.Progress` ("base pretraining: step 300/1500 (20%), 4.10 step/s, ETA …, loss …",
    the loss averaged over the last ``window`` steps); yields (callback, Progress)."""
    from tasks.common.progress import Progress

    recent: deque[float] = deque(maxlen=window)
    with Progress("base pretraining", total=max_steps, unit="step", **kwargs) as bar:
        def progress(step: int, loss: float) -> None:
            if bar.n == bar.initial == 0 and step > 1:  # resumed from a checkpoint
                bar.start_at(step - 1)
            recent.append(loss)
            bar.update(step - bar.n, loss=round(sum(recent) / len(recent), 4))

        yield progress, bar


def run_base(cfg: Config, data_dir: Path | None, out: Path) -> dict[str, Any]:
    out = Path(out)
    if not cfg.model.build_from_scratch:
        write_model_ref(out, base=str(cfg.model.name_or_path))
        return {"built": 0}
    from training.tiny import build_tiny_model, split_documents

    if data_dir is None:
        raise ValueError("model.build_from_scratch needs the data stage's folder (its pretrain.txt)")
    corpus = Path(data_dir) / PRETRAIN_FILE
    if not corpus.is_file():
        raise FileNotFoundError(
            f"{corpus} not found: build_from_scratch pretrains on synthetic data; add a synthetic dataset "
            "to data.sft/pool/eval and set data.synthetic.n_pretrain > 0")
    docs = split_documents(corpus.read_text(encoding="utf-8"))
    log_path = out / "pretrain_log.jsonl"
    ckpt = out / "checkpoint.pt"  # a retried stage resumes from it; removed once the model is saved
    if not ckpt.is_file():
        log_path.unlink(missing_ok=True)

    def log(row: dict[str, Any]) -> None:
        with log_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    with pretrain_progress(cfg.model.tiny.max_steps) as (progress, _):
        metrics = build_tiny_model(docs, cfg.model.tiny, out / "model", log=log, checkpoint=ckpt,
                                   progress=progress)
    ckpt.unlink(missing_ok=True)
    write_model_ref(out, base=str(out / "model"))
    return {"built": 1, **metrics}
