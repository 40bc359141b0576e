"""The event fields consumers rely on: what the rules give every event, and what a published event adds."""

RULE_EVENT_KEYS = frozenset(
    {
        "event",
        "id",
        "source",
        "t",
        "frame",
        "ts",
        "track",
        "confidence",
        "spine_angle_deg",
        "angle_change_deg",
        "descent_rate",
        "box",
    }
)
PUBLISHED_EVENT_KEYS = RULE_EVENT_KEYS | {"device", "camera", "backend"}
