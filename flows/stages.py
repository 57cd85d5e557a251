"""One Prefect flow per stage: run that stage alone on complete upstream artifacts.

The upstream keys come from the config (``tasks.orchestration.dag.plan_keys``), so ``stage-dpo`` with
``overrides=["dpo.beta=0.2"]`` trains a new DPO adapter on the existing SFT model and pairs, and fails
with a clear message (naming the missing stage and key) when an upstream artifact is not built yet::

    stage_flows["dpo"](profile="conf/tiny.yaml", overrides=["dpo.beta=0.2"], strategy="random")
"""

from __future__ import annotations

from typing import Any

from prefect import Flow, flow

from conf import STAGES
from conf.schema import Strategy
from flows.pipeline import load_profile, tracked
from tasks.orchestration import plan as dag
from tasks.orchestration import runner


def _stage_flow(stage: str) -> Flow:
    @flow(name=f"stage-{stage}")
    def stage_flow(profile: str = "conf/tiny.yaml", overrides: list[str] | None = None,
                   strategy: Strategy | None = None) -> dict[str, Any]:
        cfg = load_profile(profile, overrides)
        with tracked(cfg, f"stage-{stage}", profile, overrides) as tracker:
            results = runner.run_nodes(cfg, dag.stage_nodes(cfg, stage, strategy), tracker)
        return runner.summarize(cfg, results, tracker)

    stage_flow.__doc__ = f"Run the {stage} stage alone (its upstream artifacts must be complete)."
    return stage_flow


stage_flows: dict[str, Flow] = {stage: _stage_flow(stage) for stage in STAGES}
data = stage_flows["data"]
base = stage_flows["base"]
sft = stage_flows["sft"]
sample = stage_flows["sample"]
verify = stage_flows["verify"]
pairs = stage_flows["pairs"]
dpo = stage_flows["dpo"]
evaluate = stage_flows["evaluate"]
report = stage_flows["report"]
