"""Small shared utilities (crash-safe I/O)."""
