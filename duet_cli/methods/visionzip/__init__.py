"""VisionZip, stage 1 (vision-to-vision): keep dominant patches, merge the rest into contextual tokens."""

from duet_cli.methods.visionzip.config import VisionZipConfig

__all__ = ["VisionZipConfig"]
