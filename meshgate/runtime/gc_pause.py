"""Pause Python's cyclic garbage collector around big, short bursts of allocation.

Parsing and compiling a 10,000-route config allocates hundreds of thousands of small objects;
with the collector on, it runs dozens of collections over the whole heap while doing so
(measured: 1.04 s with it, 0.59 s without). None of those objects form cycles that need the
collector, so it is paused for the burst and resumed afterwards; reference counting still
frees everything as usual.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
