"""Homeport: a self-hosted backend for offline-first mobile apps."""

__version__ = "0.1.0"
