"""The interactive workbench behind `bpo-local repl`."""

from .app import Repl

__all__ = ["Repl"]
