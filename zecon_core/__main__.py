"""``python -m zecon_core``: the headless command line (see :mod:`zecon_core.apps.cli`)."""

from .apps.cli import main

raise SystemExit(main())
