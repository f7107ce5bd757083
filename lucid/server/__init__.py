"""lucid's OpenAI-compatible HTTP server (FastAPI + uvicorn): `lucid serve`."""
