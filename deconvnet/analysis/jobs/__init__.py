"""Job folders for the analyses (`python -m experiments.occlusion|invariance|correspondence|sanity`):
config checked before anything is built, then the work, the figure, result.json."""
