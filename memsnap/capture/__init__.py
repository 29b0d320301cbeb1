"""Capture: reading live processes (procfs), taking and storing snapshots of them
(record), recording many at once (sweep) and on a schedule (watch). The only layer that
touches /proc; it writes through `memsnap.store` and never reads the history back."""
