"""``ccsm serve``: an OpenAI-compatible speech and text server (`engine` runs the models)."""
