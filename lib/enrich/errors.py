"""Errors a user can act on. Jobs turn them into a message on stderr and a non-zero exit code."""

from __future__ import annotations


class EnrichError(Exception):
    """Base of every error that a job reports as a one-line message instead of a traceback."""

    exit_code = 1


class ConfigError(EnrichError):
    """A configuration file, `--set` override or environment variable is wrong."""

    exit_code = 2


class InputError(EnrichError):
    """Input data cannot be used: missing path, wrong schema, too many invalid rows."""

    exit_code = 3
