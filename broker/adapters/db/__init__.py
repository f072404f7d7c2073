"""Database adapter: engine, tables, migrations and the unit of work."""
