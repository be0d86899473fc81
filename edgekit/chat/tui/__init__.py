"""The Textual chat app (`edgekit chat`), imported as edgekit.chat.tui."""
