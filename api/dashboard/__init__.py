"""The usage dashboard at ``/dashboard`` (see :mod:`api.dashboard.router`)."""

from api.dashboard.router import router

__all__ = ["router"]
