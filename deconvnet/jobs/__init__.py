"""Jobs: a config in, one folder of files out. Each module checks every value before anything is
built, loads the model, calls the library (`deconvnet.analysis`, `deconvnet.optim`,
`deconvnet.gradient`), draws with `deconvnet.figures` and writes config.yaml, result.json
(with provenance) and the images into its own folder, resumably (docs/reproducibility.md).
The Hydra entry points in `experiments/` are thin wrappers around these functions."""
