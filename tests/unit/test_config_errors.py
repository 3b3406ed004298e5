"""A malformed rayvisor.yaml stops `rayvisor config`, `up` and `demo` before anything starts:
exit code 2, the YAML line or the field path named, no traceback. The commands run as a user
runs them (`typer`'s runner, in one subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.config import load_settings
from runtime.errors import ConfigError
from supervisors.tree import check_tree

BROKEN = {
    "syntax": "tree:\n  pools:\n    - id: a\n      agent: [actors.builtin.echo:EchoAgent\n",
    "types": "task_shards: many\nhttp:\n  max_body_bytes: [1]\n",
    "unknown_class": "tree:\n  pools:\n    - id: a\n      agent: nosuch.module:Nope\n",
    "not_an_agent": "tree:\n  pools:\n    - id: a\n      agent: actors.builtin.echo:Nope\n",
    "unknown_key": "http_prot: 8000\n",
}
# what each error must name, for the command to point at the mistake
NAMED = {
    "syntax": ["line 5, column 1", "from line 4, column 14"],
    "types": ["task_shards", "http.max_body_bytes"],
    "unknown_class": ["tree.pools.0.agent", "nosuch.module"],
    "not_an_agent": ["tree.pools.0.agent", "not a subclass of actors.Agent"],
    "unknown_key": ["http_prot: unknown key"],
}
RUNS = [
    ("config", "syntax"), ("config", "types"), ("config", "unknown_class"),
    ("config", "not_an_agent"), ("config", "unknown_key"),
    ("up", "syntax"), ("up", "unknown_class"), ("demo", "syntax"), ("demo", "unknown_key"),
]  # fmt: skip


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    for name in list(os.environ):
        if name.startswith("RAYVISOR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAYVISOR_")}
    return {**env, "RAYVISOR_HOME": str(tmp_path / "home")}


# one Python start for every run (each command parses, checks and exits in-process)
_RUNNER = """
import json, sys
from typer.testing import CliRunner
from serve.cli import app
outcomes = []
for command, config in json.loads(sys.argv[1]):
    result = CliRunner().invoke(app, [command], env={"RAYVISOR_CONFIG": config})
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    outcomes.append({"code": result.exit_code, "stderr": result.stderr,
                     "stdout": result.stdout, "crashed": repr(result.exception) if crashed else ""})
print(json.dumps(outcomes))
"""


def test_each_command_stops_with_exit_2_naming_the_line_or_field(
    clean_env: dict[str, str], tmp_path: Path
) -> None:
    for name, text in BROKEN.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    runs = [(command, str(tmp_path / f"{name}.yaml")) for command, name in RUNS]
    done = subprocess.run(
        [sys.executable, "-c", _RUNNER, json.dumps(runs)],
        env=clean_env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    outcomes = json.loads(done.stdout.splitlines()[-1])
    for (command, name), outcome in zip(RUNS, outcomes, strict=True):
        err = outcome["stderr"]
        assert outcome["code"] == 2, (command, name, outcome)
        assert not outcome["crashed"] and "Traceback" not in err + outcome["stdout"], outcome
        for part in NAMED[name]:
            assert part in err, (command, name, part, err)
    assert not (tmp_path / "home").exists()  # nothing started: no services' data


def test_a_yaml_error_is_one_line(clean_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "rayvisor.yaml"
    path.write_text(BROKEN["syntax"])
    os.environ["RAYVISOR_CONFIG"] = str(path)
    try:
        with pytest.raises(ConfigError) as info:
            load_settings()
    finally:
        del os.environ["RAYVISOR_CONFIG"]
    assert str(info.value).count("\n") == 0
    assert str(info.value).startswith(f"{path}: not valid YAML: line 5, column 1: expected")


def test_check_tree_imports_each_pools_agent_class() -> None:
    good = load_settings(tree={"pools": [{"id": "a", "agent": "actors.builtin.echo:EchoAgent"}]})
    assert [p.id for p in check_tree(good).pools] == ["a"]
    pools = [
        {"id": "a", "agent": "actors.builtin.echo:EchoAgent"},
        {"id": "b", "agent": "json:JSONDecoder"},
    ]
    bad = load_settings(tree={"pools": pools})
    with pytest.raises(ConfigError) as info:
        check_tree(bad)
    assert info.value.field == "tree.pools.1.agent"
