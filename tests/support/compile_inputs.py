"""Inputs the compiler takes besides the config, made up for tests that compile a file.

The control plane's compile job reads secrets from the environment and files; goldens and
the Envoy validation of every golden compile without either. They get placeholder values:
deterministic (goldens must not change from run to run), long enough to pass the compiler's
checks, and obviously not real.
"""

from __future__ import annotations

from meshgate.config import GatewayConfig
from xds_server.worker.secret_values import secret_refs


def placeholder_secrets(config: GatewayConfig) -> dict[str, str]:
    """A value for every secret the config names, by ``SecretRef.key()``."""
    return {
        ref.key(): f"placeholder-secret-value-for-tests:{ref.key()}"
        for _, ref in secret_refs(config)
    }
