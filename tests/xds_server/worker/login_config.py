"""The config the secret tests compile: one login whose two secrets come from an environment
variable (``client_secret``) and a file relative to the config (``hmac_secret``).

Shared by ``test_secret_values.py`` (reading the values) and ``test_secret_files.py`` (watching
the files); the former checks problem locations, so the lines below must not move.
"""

from __future__ import annotations

from pathlib import Path

CONFIG = """\
services:
  - name: app
    endpoints: [{address: 127.0.0.1, port: 9000}]
listeners:
  - name: public
    port: 8080
    virtual_hosts:
      - name: default
        routes:
          - match: {prefix: /}
            service: app
logins:
  - name: google
    provider: google
    client_id: my-client
    client_secret: {env: MG_TEST_CLIENT_SECRET}
    hmac_secret:
      file: keys/hmac.key
"""


def write_config(directory: Path, text: str = CONFIG, hmac_key: str | None = None) -> Path:
    """Writes ``gateway.yaml`` (and ``keys/hmac.key`` holding ``hmac_key`` and a newline, when
    given) into ``directory``; returns the config's path."""
    if hmac_key is not None:
        (directory / "keys").mkdir()
        (directory / "keys" / "hmac.key").write_text(hmac_key + "\n")
    path = directory / "gateway.yaml"
    path.write_text(text)
    return path
