"""Kept-token overlays for `duet visualize`: what each visual token stands for, drawn over the image.

`tokens` maps a SampleTrace onto patch grids and builds the panel titles (pure, no Pillow); `draw`
renders panels, rows and the legend with Pillow. Neither imports torch.
"""

from __future__ import annotations

from duet_cli.visualize.draw import FigureRow, render_figure, render_video_figure, write_png
from duet_cli.visualize.tokens import VisualToken, cell_states, frame_view, visual_tokens

__all__ = [
    "FigureRow",
    "VisualToken",
    "cell_states",
    "frame_view",
    "render_figure",
    "render_video_figure",
    "visual_tokens",
    "write_png",
]
