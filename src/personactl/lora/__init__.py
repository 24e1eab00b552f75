"""Weight-space personas: LoRA training, persona directions (pos - neg), merge/restore, SVD."""
