"""The README's examples hold: each Python block compiles (top-level await allowed, as in
an agent's `handle`), blocks that define agents define valid ones, and each YAML block is
a valid rayvisor.yaml."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from runtime.config import Settings

README = (Path(__file__).parents[2] / "README.md").read_text()
PYTHON = re.findall(r"```python\n(.*?)```", README, re.S)
YAML = re.findall(r"```yaml\n(.*?)```", README, re.S)


@pytest.mark.parametrize("block", PYTHON, ids=[f"python-{n}" for n in range(len(PYTHON))])
def test_python_examples_compile_and_agents_are_valid(block: str) -> None:
    code = compile(block, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if "class " in block and "(Agent)" in block and "await " not in block.split("class ")[0]:
        namespace: dict[str, object] = {}
        exec(code, namespace)  # defining the class runs Agent's checks


@pytest.mark.parametrize("block", YAML, ids=[f"yaml-{n}" for n in range(len(YAML))])
def test_yaml_examples_are_valid_settings(block: str) -> None:
    Settings.model_validate(yaml.safe_load(block))


def test_there_are_examples_for_each_collaboration_feature() -> None:
    for call in ("subscribe_discoveries", "ctx.ask", "ctx.memory", "ctx.tool", "ctx.model"):
        assert call in README
    assert len(PYTHON) >= 6 and len(YAML) >= 3
