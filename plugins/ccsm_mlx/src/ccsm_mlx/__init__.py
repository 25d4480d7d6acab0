"""MLX backend for ccsm."""
