"""Repositories: every database statement of imagegate, named for what it does.

Routers and use cases call these and execute what they return inside their own transaction, with
the API's async session or the worker's (async too, on its event loop) alike. Nothing outside the repository modules
(this package and the ledger's, :mod:`core.billing.repo`) builds SQL: ruff's TID251 rule, set in
``pyproject.toml``, refuses SQLAlchemy's statement builders anywhere else.
"""
