"""`python -m mnet_tools`: the `mnet-backbones` command line."""

from mnet_tools.cli import main

raise SystemExit(main())
