"""The first code of the ``meshgate`` command: a Ctrl-C during start-up exits quietly.

Importing the command takes a few hundred milliseconds (pydantic models, asyncio, gRPC),
and Python's default SIGINT handler turns a Ctrl-C in that window into a KeyboardInterrupt
traceback out of some import. Nothing has been started yet then, so the right answer is to
leave at once with the conventional code 130 and no output. This module imports nothing
heavy itself; the command is imported only after the quiet handler is in place.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

INTERRUPTED = 130  # 128 + SIGINT, what shells report for a Ctrl-C


def _leave_quietly(signum: int, frame: FrameType | None) -> None:
    os._exit(INTERRUPTED)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGINT, _leave_quietly)
    from meshgate.cli.main import main as command

    # From here on a Ctrl-C is a KeyboardInterrupt again, until a command (``up``) installs
    # its own handler; one that reaches us here still ends without a traceback.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return command(argv)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
