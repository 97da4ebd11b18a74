"""LLM services: the OpenAI-compatible streaming chat-completions handler and its helpers."""
