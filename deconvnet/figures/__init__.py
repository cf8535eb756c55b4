"""Drawing only: each module turns the arrays and records of one kind of job into its figure
files (Fig. 1, Fig. 2 pages and sheets, the saliency grid, the optimisation sheets, occlusion,
invariance, correspondence and sanity figures). Nothing here loads a model; every figure can be
redrawn from its job folder's files (`scripts/render.py`)."""
