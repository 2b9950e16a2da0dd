"""``python -m ext_authz``: the API key service Envoy's HTTP ext_authz filter calls."""

import sys

from ext_authz.app import main

if __name__ == "__main__":
    sys.exit(main())
