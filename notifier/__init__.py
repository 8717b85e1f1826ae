"""notifier: real-time notifications for sites that cannot hold connections open."""

__version__ = "0.1.0"
