"""Fan-out: one Broadcaster per camera, one Viewer per peer."""
