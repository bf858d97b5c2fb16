"""Serving: the engine behind the model servers (encode -> retrieve -> rank adapters), requests,
the event store and the HTTP client. Never imports kserve."""
