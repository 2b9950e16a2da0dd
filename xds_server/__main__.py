"""``python -m xds_server --config FILE``: run the control plane alone (as ``meshgate up`` does)."""

import os
import sys

# The canary Envoy is forked while gRPC threads run; the child execs at once, so gRPC's fork
# handlers are not needed (and only log a warning).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from xds_server.app import main

if __name__ == "__main__":
    sys.exit(main())
