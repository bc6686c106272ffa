"""`python -m registry_server`: the same as `model-registry-server`."""

import sys

from .main import main

sys.exit(main())
