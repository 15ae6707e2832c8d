"""Upstream providers: one module per upstream protocol, all behind :class:`base.Provider`."""
