"""What users hand duet, read safely and prepared for the model: files (bounded reads, strict YAML),
images and videos, batch files, chat templates and image aspect."""
