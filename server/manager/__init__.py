"""The manager TCP API: JSON lines (framing and envelope, sans-IO), the commands' models and handlers, one
request's answer, one connection's I/O."""
