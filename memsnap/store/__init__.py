"""Storage: the schema (schema), opening and migrating databases (database), writing
snapshots (writer), and the hand-written SQL of the hot paths (rawsql). Reading is
`memsnap.history`'s; nothing outside these two packages imports SQLAlchemy."""
