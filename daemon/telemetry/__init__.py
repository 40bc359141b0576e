"""What the daemon says about itself: the typed Snapshot and its views, the status hub, JSON safety, log rate limits."""
