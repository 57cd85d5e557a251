"""Imports run one way: conf ← libraries ← stages ← orchestration ← flows (docs/architecture.md).

Every ``import`` / ``from … import`` in the project's sources (module level and inside functions) is read
with ``ast`` and the importing module's layer compared with the imported one's. A module may import its
own layer or a lower one, with two more rules: ``tasks.common`` (the base of the libraries) imports no
other library package, and a stage module imports no other stage module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGE_MODULES = frozenset({"data", "base", "sft", "sample", "verify", "pairs", "dpo", "evaluate", "report",
                           "ablation"})
LAYERS = {"conf": 0, "library": 1, "stage": 2, "orchestration": 3, "flows": 4}


def layer(module: str) -> str | None:
    """The layer of a project module (None for third-party and standard-library modules)."""
    parts = module.split(".")
    top = parts[0]
    if top == "conf":
        return "conf"
    if top in ("verifier", "training"):
        return "library"
    if top == "flows":
        return "flows"
    if top != "tasks" or len(parts) == 1:
        return None
    if parts[1] == "orchestration":
        return "orchestration"
    if parts[1] in STAGE_MODULES:
        return "stage"
    return "library"


def imported_modules(tree: ast.AST, package: str) -> list[tuple[int, str]]:
    """(line, module) of every import in ``tree``; ``from pkg import name`` counts ``pkg.name`` when that
    is a submodule (``from tasks import sample``), relative imports resolved against ``package``."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names
                    if (ROOT / Path(*f"{base}.{a.name}".split("."))).with_suffix(".py").is_file()
                    or (ROOT / Path(*f"{base}.{a.name}".split("."))).is_dir()]
    return out


def violations(module: str, source: str) -> list[str]:
    """What ``module`` (dotted name, its ``source``) imports against the direction of the layers."""
    mine = layer(module)
    if mine is None:
        return []
    package = module if module.endswith("__init__") else module.rsplit(".", 1)[0]
    found = []
    for line, target in imported_modules(ast.parse(source), package):
        theirs = layer(target)
        if theirs is None or target == module:
            continue
        if LAYERS[theirs] > LAYERS[mine]:
            found.append(f"{module}:{line} ({mine}) imports {target} ({theirs})")
        elif mine == "stage" and theirs == "stage" and target.split(".")[:2] != module.split(".")[:2]:
            found.append(f"{module}:{line}: a stage imports another stage, {target}")
        elif module.startswith("tasks.common") and theirs == "library" and target.startswith("tasks.") \
                and not target.startswith("tasks.common"):
            found.append(f"{module}:{line}: tasks.common imports the library {target}")
    return found


def project_modules() -> list[tuple[str, Path]]:
    out = []
    for top in ("conf", "tasks", "flows", "verifier", "training"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            out.append((".".join(rel.parts), path))
    return out


def test_imports_run_one_way():
    found = [v for module, path in project_modules() for v in violations(module, path.read_text(encoding="utf-8"))]
    assert not found, "imports against conf ← libraries ← stages ← orchestration ← flows:\n" + "\n".join(found)


def test_every_stage_of_the_pipeline_has_a_stage_module():
    from conf import STAGES

    assert set(STAGES) <= STAGE_MODULES
    assert all((ROOT / "tasks" / f"{s}.py").is_file() for s in STAGE_MODULES)


@pytest.mark.parametrize(("module", "source", "why"), [
    ("tasks.evaluation.report", "from tasks.orchestration.plan import Node\n", "imports tasks.orchestration.plan"),
    ("tasks.pairing.pairs", "def f():\n    from tasks import sample\n", "imports tasks.sample (stage)"),
    ("tasks.sample", "from tasks.pairs import run\n", "a stage imports another stage"),
    ("tasks.verify", "import flows.pipeline\n", "imports flows.pipeline (flows)"),
    ("conf.schema", "from tasks.common.records import Problem\n", "imports tasks.common.records (library)"),
    ("tasks.common.records", "from tasks.evaluation.stats import accuracy\n", "tasks.common imports the library"),
    ("tasks.orchestration.runner", "from flows.pipeline import tracked\n", "(flows)"),
])
def test_the_check_finds_an_import_against_the_direction(module, source, why):
    found = violations(module, source)
    assert len(found) == 1 and why in found[0], found


def test_the_check_accepts_imports_down_the_layers():
    assert violations("flows.pipeline", "from tasks.orchestration import runner\nfrom tasks import sample\n") == []
    assert violations("tasks.orchestration.stages", "from tasks import base, data\n") == []
    assert violations("tasks.sample", "from tasks.generation.sampling import shards\nimport torch\n") == []
