"""`edgekit serve`: a deployment behind the OpenAI chat-completions API (app), and the server around it (server)."""
