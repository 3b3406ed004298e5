"""A Ray worker setup hook that loads rayvisor's modules before the worker gets an actor.

`init_ray` installs `preload` as the job's `worker_process_setup_hook`, so it runs in every
worker process of the job right after the process starts. It reads the job's secret
settings into the environment (`runtime.worker_env`), sets up structured logs
(`runtime.logs`: JSON lines on the worker's stderr file), then imports the modules named in
`RAYVISOR_PRELOAD` (comma-separated; `module:function` also calls the function) and nothing
else; workers without that variable (the job's plain runtime env) pay one small import.
Agent hosts run with the variable set, and so do the warm workers a supervisor has Ray
prestart for them: a restarted agent host then finds its ~0.1-0.3 s (more on a loaded
machine) of imports and model building done. The hook never fails the worker: an entry
that fails is logged and left for the actor to do.
"""

from __future__ import annotations

import importlib
import logging
import os

from runtime import logs, telemetry, worker_env

__all__ = ["PRELOAD_ENV", "preload"]

PRELOAD_ENV = "RAYVISOR_PRELOAD"


def preload() -> None:
    try:  # the secret settings the job keeps out of its runtime env (`runtime.worker_env`)
        worker_env.load()
    except Exception:  # `load_settings` tries again when an actor needs them
        logging.getLogger(__name__).exception("secret settings not loaded")
    try:  # first, so that what follows logs structured lines
        logs.setup(everything=True)
    except ValueError:  # a bad RAYVISOR_LOG_FORMAT / _LEVEL: Python's default handler
        logging.getLogger(__name__).exception("logs not set up")
    telemetry.preload()
    for entry in filter(None, (n.strip() for n in os.environ.get(PRELOAD_ENV, "").split(","))):
        module, _, function = entry.partition(":")
        try:
            loaded = importlib.import_module(module)
            if function:
                getattr(loaded, function)()
        except Exception:
            logging.getLogger(__name__).exception("could not preload %s", entry)
