"""Module forms of every loss: configuration in ``__init__``, one functional call in ``forward``."""

from lossforge.nn import (
    asymmetric,
    balanced,
    box,
    classification,
    combine,
    detection,
    dice,
    focal,
    long_tail,
    lovasz,
    ohem,
    regression,
)
from lossforge.nn._base import Loss
from lossforge.nn.asymmetric import *  # noqa: F403
from lossforge.nn.balanced import *  # noqa: F403
from lossforge.nn.box import *  # noqa: F403
from lossforge.nn.classification import *  # noqa: F403
from lossforge.nn.combine import *  # noqa: F403
from lossforge.nn.detection import *  # noqa: F403
from lossforge.nn.dice import *  # noqa: F403
from lossforge.nn.focal import *  # noqa: F403
from lossforge.nn.long_tail import *  # noqa: F403
from lossforge.nn.lovasz import *  # noqa: F403
from lossforge.nn.ohem import *  # noqa: F403
from lossforge.nn.regression import *  # noqa: F403

__all__ = [
    "Loss",
    *classification.__all__,
    *focal.__all__,
    *asymmetric.__all__,
    *balanced.__all__,
    *dice.__all__,
    *lovasz.__all__,
    *regression.__all__,
    *box.__all__,
    *detection.__all__,
    *long_tail.__all__,
    *ohem.__all__,
    *combine.__all__,
]
