"""`duet train`: fine-tuning with a reduction profile active in the forward (accelerate, resumable)."""
