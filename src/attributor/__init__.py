"""attributor: data and model provenance for PyTorch models."""
