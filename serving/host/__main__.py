"""``python -m serving.host COMMAND …``: the host agent's command line (``cli``)."""

from serving.host.cli import main

raise SystemExit(main())
