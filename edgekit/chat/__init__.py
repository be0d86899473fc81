"""Chat with a deployment: the engine (context, streaming, figures), one-shot generation, the UIs."""
