"""Array helpers that generated modules inline (by source) so they stay standalone."""
