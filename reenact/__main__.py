"""`python -m reenact` entry point."""

from reenact.cli import main

main()
