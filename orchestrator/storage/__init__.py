"""Postgres storage shared by both sides: tables, engine, inbox and outbox."""
