"""The reduction engine: per-instance hooks for stage 1 (vision) and stage 2 (LLM), and what they record."""
