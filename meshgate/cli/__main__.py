"""``python -m meshgate.cli``: the ``meshgate`` command without the console script."""

import sys

from meshgate.cli.main import main

sys.exit(main())
