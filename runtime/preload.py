"""A Ray worker setup hook that loads rayvisor's modules before the worker gets an actor.

`init_ray` installs `preload` as the job's `worker_process_setup_hook`, so it runs in every
worker process of the job right after the process starts. It imports the modules named in
`RAYVISOR_PRELOAD` (comma-separated) and nothing else; workers without that variable (the
job's plain runtime env) pay one small import. Agent hosts run with the variable set, and so
do the warm workers a supervisor has Ray prestart for them: a restarted agent host then
finds its ~0.1-0.3 s (more on a loaded machine) of imports done. The hook never fails the
worker: a module that does not import is logged and left for the actor to import.
"""

from __future__ import annotations

import importlib
import logging
import os

__all__ = ["PRELOAD_ENV", "preload"]

PRELOAD_ENV = "RAYVISOR_PRELOAD"


def preload() -> None:
    for name in filter(None, (n.strip() for n in os.environ.get(PRELOAD_ENV, "").split(","))):
        try:
            importlib.import_module(name)
        except Exception:
            logging.getLogger(__name__).exception("could not preload %s", name)
