"""End-to-end experiments, one per workflow."""

from attributor.pipelines.run import Run

__all__ = ["Run"]
