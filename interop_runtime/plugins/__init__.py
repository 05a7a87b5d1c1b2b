"""Plugins that ship with the core (registered through entry points like any other)."""
