"""``python -m engine.contract docs [--check]``: rewrite (or check) the tables docs/CLI.md and
docs/PROTOCOL.md embed from the contract."""
import argparse
import sys

from .docs import stale, update

ap = argparse.ArgumentParser(prog="python -m engine.contract")
ap.add_argument("what", choices=["docs"], help="regenerate the docs' option and message tables")
ap.add_argument("--check", action="store_true", help="only list stale files; exit 1 if any")
args = ap.parse_args()
files = stale() if args.check else update()
for f in files:
    print(f"{'stale' if args.check else 'updated'}: {f}")
sys.exit(1 if args.check and files else 0)
