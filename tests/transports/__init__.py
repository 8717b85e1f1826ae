"""The transports' tests (notifier.transports)."""
