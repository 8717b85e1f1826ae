"""The backends' tests (notifier.backends)."""
