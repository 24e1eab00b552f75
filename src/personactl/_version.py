"""The package version, in a module of its own so the core can stamp files without importing the whole API."""

__version__ = "0.1.0"
