"""How Ray workers get secret settings (the services' URLs with their passwords) without
Ray's `runtime_env`.

Ray shows a job's and an actor's `runtime_env`, environment variables included, to anyone
who opens its dashboard or calls `ray.util.state` (`list_jobs`, `list_actors(detail=True)`).
So the driver writes the secret variables to Ray's GCS key-value store (`publish`, under
a key of its Ray namespace, in the KV namespace `rayvisor`) and puts only the key's name in
the runtime env (`RAYVISOR_SECRETS_KEY`, not a secret). Each worker, on any node, reads
them as it starts (`load`, from the `runtime.preload` hook) into its own process
environment, where `load_settings` finds them as before. The GCS is no more open than Ray
itself: whoever can read it can run code on the cluster anyway.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from runtime.redact import is_secret_key, redact

__all__ = ["KEY_ENV", "KV_NAMESPACE", "fetch", "is_secret_var", "load", "publish", "split"]

KEY_ENV = "RAYVISOR_SECRETS_KEY"
KV_NAMESPACE = "rayvisor"
_ALWAYS_SECRET = frozenset({"RAYVISOR_DATABASE_URL", "RAYVISOR_NATS_URL", "RAYVISOR_API_KEY"})


def is_secret_var(name: str, value: str) -> bool:
    """Whether an environment variable must stay out of `runtime_env`: a service URL, a
    secret-sounding name (`..._TOKEN`, `..._PASSWORD`, OpenTelemetry's `..._HEADERS`, which
    carry auth headers) or a value holding a URL's credentials."""
    upper = name.upper()
    return (
        upper in _ALWAYS_SECRET
        or "HEADERS" in upper
        or is_secret_key(upper)
        or redact(value) != value
    )


def split(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """`env` as (variables fit for `runtime_env`, secret variables)."""
    plain = {k: v for k, v in env.items() if not is_secret_var(k, v)}
    return plain, {k: v for k, v in env.items() if k not in plain}


def publish(key: str, secrets: Mapping[str, str]) -> dict[str, str]:
    """Write `secrets` (variable -> value) to the GCS under `key` (replacing what was
    there); returns the variables that let a worker find them, for its `runtime_env`.
    Call after `ray.init`."""
    from ray.experimental import internal_kv

    internal_kv._internal_kv_put(
        key, json.dumps(dict(secrets)), overwrite=True, namespace=KV_NAMESPACE
    )
    return {KEY_ENV: key}


def fetch(key: str) -> dict[str, str]:
    """The variables `publish` wrote under `key`; empty if there are none."""
    from ray.experimental import internal_kv

    if not internal_kv._internal_kv_initialized():
        return {}
    raw = internal_kv._internal_kv_get(key, namespace=KV_NAMESPACE)
    return json.loads(raw) if raw else {}


def load() -> dict[str, str]:
    """In a worker: set the secret variables its job published into this process's
    environment (a variable the worker already has wins: an actor's own runtime env may
    point it elsewhere). Returns what was read."""
    key = os.environ.get(KEY_ENV)
    if not key:
        return {}
    values = fetch(key)
    for name, value in values.items():
        os.environ.setdefault(name, value)
    return values
