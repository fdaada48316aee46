"""duet: two-stage visual token reduction (VisionZip + PyramidDrop) for stock transformers VLMs.

The Python API lives in :mod:`duet_cli.api`; importing this package stays light (no torch).
"""

__version__ = "0.1.0"
