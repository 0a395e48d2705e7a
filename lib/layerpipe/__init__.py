"""layerpipe: turn a Guix or Nix store closure into a layered container image.

The four stages (closure_read, layer_split, layer_tar, image_assemble) talk
NDJSON records to each other; see man/layerpipe-records.7 for the format.
"""
import os

__version__ = "0.1.0"

# Plain help texts: the man pages mirror them, and rich boxes reflow the
# Examples blocks.  Set before any stage imports typer.
os.environ.setdefault("TYPER_USE_RICH", "0")
