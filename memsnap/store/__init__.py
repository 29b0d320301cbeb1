"""Storage, the one home of SQLAlchemy: the schema (schema), opening and migrating
databases (database), writing (writer) and reading (reader) snapshots, forgetting them
(prune), and the face the rest of memsnap uses, `repository.Repository`, which turns
every database failure into memsnap's `DatabaseError`."""
