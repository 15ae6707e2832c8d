"""OpenAI Chat Completions with image output: ``POST /v1/chat/completions`` (wire-formats §2)."""
