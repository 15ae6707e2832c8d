"""Shared domain of imagegate: settings, tables, canonical types, routing, storage, errors.

Nothing here imports fastapi or celery; ``api`` and ``worker`` both build on it.
"""
