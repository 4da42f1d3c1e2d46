"""Graph analysis: shapes, MACs, the model summary and channel groups (no torch here)."""
