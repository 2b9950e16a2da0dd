"""The service shell shared by every meshgate process: logs, admin HTTP, child processes."""
