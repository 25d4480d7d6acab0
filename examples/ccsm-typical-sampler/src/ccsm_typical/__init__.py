"""Locally typical sampling for ccsm (an example plugin)."""
