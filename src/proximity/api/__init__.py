"""The Proximity service: HTTP API, jobs, metrics and the dashboard."""
