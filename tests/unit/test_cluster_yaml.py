"""cluster.yaml is a config Ray's cluster launcher accepts, and it starts `rayvisor up` on
the head with the external services of `rayvisor.env`."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from runtime.config import load_settings

ROOT = Path(__file__).parents[2]


def cluster() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def prepared(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` does first (`_bootstrap_config`): defaults filled in, then checked
    against Ray's schema (ray-schema.json) and its own rules."""
    config = prepare_config(copy.deepcopy(config))
    validate_config(config)
    return config


def test_ray_validates_the_cluster_config() -> None:
    config = prepared(cluster())
    assert config["provider"]["type"] == "local"
    assert config["max_workers"] == len(config["provider"]["worker_ips"])


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c.update(head_start_ray_commands="rayvisor up"),  # not a list
        lambda c: c.update(rayvisor={"up": True}),  # no such key
        lambda c: c["auth"].update(ssh_user=7),
    ],
)
def test_ray_refuses_a_broken_one(change: Any) -> None:
    """The check above can fail: Ray's validation refuses what it does not know."""
    config = cluster()
    change(config)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        prepared(config)


def test_rayvisor_up_runs_on_the_head_after_ray_with_the_services_of_rayvisor_env() -> None:
    config = prepared(cluster())
    head = config["head_start_ray_commands"]
    ray_start = next(i for i, c in enumerate(head) if "ray start --head" in c)
    [up] = [c for c in head if "rayvisor up" in c]
    assert head.index(up) > ray_start
    assert ". ~/rayvisor.env" in up and "set -a" in up  # its variables exported to `up`
    assert up.rstrip().endswith("&") and "nohup" in up  # `up` stays up after ssh ends
    assert not any("rayvisor up" in c for c in config["worker_start_ray_commands"])
    mounts = config["file_mounts"]
    assert mounts["/home/rayvisor/rayvisor.env"] == "./rayvisor.env"
    assert "rayvisor.env" in config["rsync_exclude"]  # not on the workers with the checkout
    assert "rayvisor.env" in (ROOT / ".gitignore").read_text().split()


def test_the_example_env_gives_external_services_and_joins_the_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """deploy/rayvisor.env.example, read as `rayvisor up` reads the environment."""
    lines = (ROOT / "deploy" / "rayvisor.env.example").read_text().splitlines()
    variables = dict(
        line.split("=", 1) for line in lines if line.strip() and not line.startswith("#")
    )
    assert {"RAYVISOR_DATABASE_URL", "RAYVISOR_NATS_URL"} <= set(variables)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.database_dsn is not None and settings.database_dsn.startswith("postgresql://")
    assert settings.nats_servers is not None and settings.nats_servers.startswith("nats://")
    assert settings.ray_address == "auto"  # not a local Ray of its own
    assert settings.http_host == "0.0.0.0"
