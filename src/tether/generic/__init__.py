"""Ready-made consumers for WebSocket and HTTP connections."""
