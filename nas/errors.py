"""The project's error types under their public name (``nas.errors.UserError``); they live in
the base package, :mod:`nasbase.errors`, so that every package can raise them."""

from nasbase.errors import Fault, UserError, disk_fault

__all__ = ["Fault", "UserError", "disk_fault"]
