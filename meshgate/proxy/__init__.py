"""Envoy itself: the bootstrap template and running the binary as a child process."""
