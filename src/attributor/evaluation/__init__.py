"""Evaluation of attributions against ground truth, each metric beside a chance baseline."""

from attributor.evaluation.detection import detection_auc, label_agreement, recall_at_fractions

__all__ = ["detection_auc", "label_agreement", "recall_at_fractions"]
