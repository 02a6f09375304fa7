"""The HTTP API: one router per resource (``routes/``) and the typed dependencies they share (``deps``)."""
