"""``python -m zecon_core``: the headless command line (see :mod:`zecon_core.cli`)."""

from .cli import main

raise SystemExit(main())
