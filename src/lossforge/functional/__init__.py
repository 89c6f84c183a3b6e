"""Pure-PyTorch losses: the specification every backend must match.

All functions are stateless, take ``(input, target)`` positionally and everything else by keyword,
and end in the shared weighting/reduction contract (``lossforge._reduction``).
"""

from lossforge.functional import (
    asymmetric,
    balanced,
    box,
    classification,
    detection,
    dice,
    focal,
    long_tail,
    lovasz,
    ohem,
    regression,
)
from lossforge.functional.asymmetric import *  # noqa: F403
from lossforge.functional.balanced import *  # noqa: F403
from lossforge.functional.box import *  # noqa: F403
from lossforge.functional.classification import *  # noqa: F403
from lossforge.functional.detection import *  # noqa: F403
from lossforge.functional.dice import *  # noqa: F403
from lossforge.functional.focal import *  # noqa: F403
from lossforge.functional.long_tail import *  # noqa: F403
from lossforge.functional.lovasz import *  # noqa: F403
from lossforge.functional.ohem import *  # noqa: F403
from lossforge.functional.regression import *  # noqa: F403

__all__ = [
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
]
