"""Names every node module shares."""

CATEGORY = "RealignDiff"
GUIDANCE = "REALIGN_GUIDANCE"  # a list of realign_diff.guidance.RealignGuidance, one per image


def node_id(name: str) -> str:
    """Stable node IDs: never rename one once shipped, or saved workflows stop loading."""
    return f"RealignDiff{name}"
