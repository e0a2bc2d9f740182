"""``python -m serving.host COMMAND …``: the host agent's command line."""

from serving.host.agent import main

raise SystemExit(main())
