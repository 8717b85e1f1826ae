"""The domain's tests (notifier.domain)."""
