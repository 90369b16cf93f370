"""Other frameworks' checkpoints in and out (`hf`: Hugging Face)."""
