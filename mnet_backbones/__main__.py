"""`python -m mnet_backbones`: the `mnet-backbones` command line."""

from mnet_backbones.cli import main

raise SystemExit(main())
