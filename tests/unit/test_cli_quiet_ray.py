"""What Ray's raylet pushes to a driver stays off a rayvisor driver's console."""

from __future__ import annotations

import logging

import pytest

from runtime.raycluster import quiet_driver

DIED = "A worker died or was killed while executing a task by an unexpected system error."


def test_raylet_messages_go_to_the_log_and_worker_output_still_prints(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from ray._private import worker as ray_worker

    # restored after the test, so the rest of the session sees Ray's own
    monkeypatch.setattr(ray_worker, "print_to_stdstream", ray_worker.print_to_stdstream)
    caplog.set_level(logging.DEBUG, logger="rayvisor.ray")
    quiet_driver()
    quiet_driver()  # idempotent: wrapped once
    assert ray_worker.print_to_stdstream.rayvisor_quiet

    # what `listen_error_messages` passes, looked up in the module at each call
    ray_worker.print_to_stdstream(
        {"lines": [DIED], "pid": "raylet", "is_err": False}, ignore_prefix=False
    )
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    assert [r.getMessage() for r in caplog.records] == [f"(raylet) {DIED}"]

    ray_worker.print_to_stdstream(
        {"lines": ["hello from a worker"], "pid": 4242, "ip": "127.0.0.1", "is_err": False},
        ignore_prefix=False,
    )
    assert "hello from a worker" in capsys.readouterr().out


def test_serve_driver_info_lines_are_filtered_out(monkeypatch: pytest.MonkeyPatch) -> None:
    serve_logger = logging.getLogger("ray.serve")
    monkeypatch.setattr(serve_logger, "filters", list(serve_logger.filters))
    quiet_driver()
    quiet_driver()
    info = serve_logger.makeRecord("ray.serve", logging.INFO, __file__, 1, "ready", (), None)
    warning = serve_logger.makeRecord("ray.serve", logging.WARNING, __file__, 1, "slow", (), None)
    assert not serve_logger.filter(info)
    assert serve_logger.filter(warning)
    assert len(serve_logger.filters) == 1


def test_the_token_notice_is_dropped_and_other_warnings_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ray._private.authentication import authentication_token_setup as token_setup

    logger = logging.getLogger(token_setup.__name__)
    monkeypatch.setattr(logger, "filters", list(logger.filters))
    quiet_driver()

    def record(message: str) -> logging.LogRecord:
        return logger.makeRecord(logger.name, logging.WARNING, __file__, 1, message, (), None)

    assert not logger.filter(record("Token authentication is enabled for this Ray cluster."))
    assert logger.filter(record("Token authentication is enabled but no token was found."))
