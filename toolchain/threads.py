"""The number of torch threads for one block of work.

Building, tracing, scoring and training on a busy 2-core machine run several times faster on one thread, and
a timing compiled on one thread does not compete with the timed runtime's own threads. Saliency, the latency
package and the benchmarks share this one helper.

    >>> import torch
    >>> before = torch.get_num_threads()
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with `count` torch threads, then restore the previous number."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
