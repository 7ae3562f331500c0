"""syncledger's servers: manager TCP API, event WebSocket, game-wallet HTTP API, all on Trio."""
