"""``rnnlab demo`` placeholder (filled in below)."""
