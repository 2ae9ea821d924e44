"""Two-stage training (align: projector only; instruct: projector + LLM LoRA/full) on torchrun."""
