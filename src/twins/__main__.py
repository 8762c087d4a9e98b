"""`python -m twins` runs the command line (also under torchrun)."""

from twins.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
