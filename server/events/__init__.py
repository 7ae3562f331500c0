"""The event stream over WebSocket (``/events``): trade:event messages, one per text frame, with from_seq replay."""
