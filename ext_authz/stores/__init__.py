"""Where API key records live: SQLite (the embedded default) or Redis (for replicas)."""
