"""The domain: what a node holds and does, whatever carries it (docs/architecture.rst)."""
