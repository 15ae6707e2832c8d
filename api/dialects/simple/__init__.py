"""The CG-Image simple route: ``POST /generate`` (seed 000)."""
