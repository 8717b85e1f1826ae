"""The HTTP layer's and the listeners' tests (notifier.http)."""
