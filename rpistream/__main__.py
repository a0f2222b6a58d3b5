"""`python -m rpistream`: the same as the `rpistream` command."""

from rpistream.cli import main

raise SystemExit(main())
