"""The optional HTTP listener: a self-refreshing dashboard, its JSON, Prometheus /metrics, and a
token-guarded run-now action (twisted.web; off unless `http_port` is set)."""
