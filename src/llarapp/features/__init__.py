"""Features: the text-embedding stage (MiniLM vectors of tracks and titles)."""
