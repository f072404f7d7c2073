"""The alembic environment and versions, shipped in the wheel as `broker.migrations`.

`broker.adapters.db.engine` finds this folder with importlib.resources; the files are loaded by
alembic by path, never imported as modules of the broker."""
