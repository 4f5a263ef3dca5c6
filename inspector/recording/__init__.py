"""Consumers that record the station streams in the database: verdicts and part verdicts."""
