"""Models written once against the backend contract: Llama-style transformers, CSM, Mimi."""
