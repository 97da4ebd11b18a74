"""Services: LLM handlers and other external integrations."""
