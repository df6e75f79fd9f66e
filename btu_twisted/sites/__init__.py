"""Serving the sites of a Frappe bench: the Redis key layout of each site, one pipeline per site,
the bench's sites followed while running, and control requests routed to the right site."""
