"""Attribution: the graph of one prompt (``attribute``) and its cost beforehand (``estimate_attribution``).

Modules in the order of the method: ``engine`` (``attribute``, the five phases), ``targets``
(what the graph explains), ``components`` (its sources), ``batching`` (targets cut into backward
passes), ``replays`` (retained linear replays), ``rows`` (one batch's rows by injected
gradients), ``runner`` (rows batch by batch), ``selection`` (best-first features under a
budget); ``estimate`` predicts memory and time with the same batching plan.
"""

from tracewire.attribution.engine import attribute
from tracewire.attribution.estimate import Estimate, estimate_attribution
from tracewire.attribution.targets import CustomTarget, LogitDifference

__all__ = ["CustomTarget", "Estimate", "LogitDifference", "attribute", "estimate_attribution"]
