"""One ``--help`` style for every meshgate command and service: each flag ends with its
default, so an operator never has to read the source to learn what happens without it."""

from __future__ import annotations

import argparse


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)", except where there is no value to show: a switch that is off,
    or a flag without a default, whose help must then say in words what happens without it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)
