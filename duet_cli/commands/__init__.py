"""Subcommands: each parses options, makes one library call and renders the result."""
