"""Internal helpers shared by every layer (atomic files, optional imports)."""
