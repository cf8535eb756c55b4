"""What goes into the network: models and their weights (`models`, `hed`), the bundled sample
photos (`samples`, a leaf), images and the weights' eval preprocessing (`images`), datasets and
their batches (`datasets`), decoding in DataLoader workers (`loader`), atomic file writes
(`files`) and the repository's own paths (`paths`).

Depends only on `deconvnet.core`.
"""
