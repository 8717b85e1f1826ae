"""The backends: where state is kept and how messages reach every node.

``notifier.backends.interfaces`` is what the domain knows of them;
``notifier.backends.configured`` is the one place that chooses, from
``[store] url``: an SQLite store with delivery on this node (its history
kept in the file, or in memory with ``sqlite::memory:``), or Redis for both
(one server, or the master that Sentinels name), shared by every node
using it. This package's own module loads none of them, so that the domain
importing the interfaces imports no backend.
"""
