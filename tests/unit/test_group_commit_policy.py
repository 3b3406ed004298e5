"""`FlushPolicy`: a lone write on an idle committer goes at once; under load the window
holds (a statement in flight, or the last batch carried several writes)."""

from __future__ import annotations

import pytest

from runtime.store.group_commit import FlushPolicy


def test_a_lone_write_on_an_idle_committer_is_written_at_once() -> None:
    policy = FlushPolicy(window_s=0.005)
    assert policy.delay_s(committing=False, last_batch_writes=0) == 0.0  # the first ever
    assert policy.delay_s(committing=False, last_batch_writes=1) == 0.0  # one after another


UNDER_LOAD = [(True, 0), (True, 1), (True, 9), (False, 2), (False, 500)]


@pytest.mark.parametrize(("committing", "last_batch_writes"), UNDER_LOAD)
def test_under_load_a_batch_waits_the_window(committing: bool, last_batch_writes: int) -> None:
    assert FlushPolicy(window_s=0.005).delay_s(committing, last_batch_writes) == 0.005


def test_no_window_means_never_waiting() -> None:
    assert FlushPolicy(window_s=0).delay_s(committing=True, last_batch_writes=100) == 0.0
