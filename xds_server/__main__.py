"""``python -m xds_server --config FILE``: run the control plane alone (as ``meshgate up`` does)."""

import sys

from .app import main

if __name__ == "__main__":
    sys.exit(main())
