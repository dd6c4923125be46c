"""``python -m stylegan_jax.parity``: the same command as ``stylegan-jax parity``."""

import sys

from stylegan_jax.parity.cli import main

sys.exit(main())
