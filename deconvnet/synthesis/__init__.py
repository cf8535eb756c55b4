"""The optimisation family's experiments as plain run functions, one job folder each.

`run_filters`, `run_class_model`, `run_deep_dream`, `run_invert`, `run_fooling` (the work behind
`python -m experiments.<name>`) check every value before the model is built, write their job
folder cell by cell (`job.Job`: checkpoints, config.yaml, one PNG per cell, sheets, images.npz,
result.json) and return the result dict; `render_synthesis(job_dir)` redraws a finished job's
sheets from its files alone.
"""

from deconvnet.synthesis.class_model import run_class_model
from deconvnet.synthesis.dream import run_deep_dream
from deconvnet.synthesis.filters import run_filters
from deconvnet.synthesis.fooling import run_fooling
from deconvnet.synthesis.invert import run_invert
from deconvnet.synthesis.job import SYNTHESIS_EXPERIMENTS, render_synthesis

__all__ = ["SYNTHESIS_EXPERIMENTS", "render_synthesis", "run_class_model", "run_deep_dream",
           "run_filters", "run_fooling", "run_invert"]
