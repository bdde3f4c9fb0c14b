"""Getting encoders out: reading checkpoints, timm exports for the Hub, detection and pose converters."""
