"""Label values with a meaning of their own, defined once for the station, the trainer and the GUI.

Every other label is a defect class name from the model package's manifest.
"""

from __future__ import annotations

GOOD_LABEL = "good"
"""The label of a part without defect (a labeller's verdict, a class of the data set, a folder name)."""

UNSURE_LABEL = "unsure"
"""A labeller could not decide: the frame is kept out of training and out of the held-out set."""

__all__ = ["GOOD_LABEL", "UNSURE_LABEL"]
