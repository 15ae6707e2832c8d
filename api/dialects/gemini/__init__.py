"""Gemini native: ``/v1beta/models/{model}:generateContent``, ``:streamGenerateContent``, ``:predict``
and ``GET /v1beta/models`` (wire-formats §4)."""
