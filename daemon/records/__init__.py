"""Event records on disk: the recorder (clips, snapshots, signals), the validated store, signal plots."""
