"""HTTP: WHEP endpoints, the viewer page, the JSON API, metrics and health, behind one access token."""
