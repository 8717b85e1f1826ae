"""The Redis backend: its client, its key names, the store, the broker,
and the Lua scripts they run (``lua/``)."""
