"""What the spawned processes of tests/test_training.py run.

A spawned child imports the module of the function it runs: this one imports nothing of its own, where
test_training's own module would bring pytest, the local archive and the conftest (~0.3 s of CPU a child).
"""

from __future__ import annotations

from typing import Any


def read_in_child(samples: Any, indices: list[int], queue: Any) -> None:
    """Put on ``queue`` the connection pools the child's session came with, the pixels of ``indices`` and
    the requests sent (or the exception's repr)."""
    try:
        transport = samples.api.context.transport
        pools = len(transport.session.adapters["http://"].poolmanager.pools)
        queue.put((pools, [samples.pixels(i).tobytes() for i in indices], samples.api.request_count))
    except BaseException as exc:  # noqa: BLE001  (reported to the parent)
        queue.put(repr(exc))


def epoch_after_go(epoch: Any, started: Any, go: Any, queue: Any) -> None:
    """Put on ``queue`` the epoch ``epoch`` holds once the parent says go (a kept loader worker's next epoch)."""
    started.set()
    go.wait(60)
    queue.put(epoch.value)
