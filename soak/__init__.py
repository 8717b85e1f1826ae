"""A soak of notifier: load and faults together, then figures.

``python -m soak`` (``make soak``, ``make soak-short``) starts Redis with
Sentinel and three daemons on it, and a daemon on a durable SQLite file;
keeps subscribers of every transport coming and going, publishers
publishing with retries, and faults happening on a schedule drawn from the
seed; checks that every acknowledged message reached every subscriber that
was owed it, in order and once; and writes a report (docs/reliability.rst).
"""
