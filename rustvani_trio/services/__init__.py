"""Services: LLM handlers and other external integrations (each imported where it is used)."""
