"""The game-wallet HTTP API (the operator's side of a seamless wallet, as game providers call it): the app on
the HTTP/1.1 driver, and its request models."""
