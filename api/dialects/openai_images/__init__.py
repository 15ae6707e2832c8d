"""OpenAI Images: ``POST /v1/images/generations`` (wire-formats §1)."""
