"""Memory discipline and observability: RSS watch and load shedding, what every
owner holds, /metrics, /api/stats, allocation diffs, systemd notification."""
