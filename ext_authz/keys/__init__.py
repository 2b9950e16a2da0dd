"""API keys: their format (prefix, id, secret, checksum), their keyed hash, their records."""
