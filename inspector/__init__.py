"""Inspection station runtime: importable without torch or Qt."""

__version__ = "0.1.0"
