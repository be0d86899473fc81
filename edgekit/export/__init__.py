"""Subnets in formats other tools load as they are: GGUF for llama.cpp, ollama and LM Studio."""
