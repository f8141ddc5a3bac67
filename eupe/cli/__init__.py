"""The ``eupe`` command line: one script, one module per subcommand."""
