"""Independent float64 references, written from the papers' formulas with plain loops and Python
math.

They never call lossforge and avoid the vectorised tricks of the production code, so an error in the
library cannot be reproduced here by construction.
"""
