"""``python -m importapi``: the command line."""

from importapi.cli import main

main()
