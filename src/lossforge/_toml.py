"""``tomllib`` on every Python that lossforge supports.

The standard library's ``tomllib`` exists from Python 3.11; on 3.10 the same parser comes from its
backport ``tomli`` (a dependency there only: ``tomli>=2; python_version < '3.11'``). Modules that
read TOML import it from here: ``from lossforge._toml import tomllib``.
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

__all__ = ["tomllib"]
