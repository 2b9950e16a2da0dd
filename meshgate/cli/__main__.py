"""``python -m meshgate.cli``: the ``meshgate`` command without the console script."""

import sys

from meshgate.cli.entry import main

sys.exit(main())
