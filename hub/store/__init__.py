"""Persistence: ORM models and the SQL that reads and writes them."""
