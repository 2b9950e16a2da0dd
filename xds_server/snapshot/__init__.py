"""Immutable versioned snapshots, the references between their resources, and the cache."""
