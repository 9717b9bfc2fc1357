"""Runnable experiments: the entry points behind ``advlearn`` subcommands."""
