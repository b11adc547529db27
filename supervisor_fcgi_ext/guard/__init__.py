"""fcgi-guard: the event listener that enforces timeouts, slowlog and recycling."""
