"""`python -m tokenspy ...`: the same as the `tokenspy` command."""

from tokenspy.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
