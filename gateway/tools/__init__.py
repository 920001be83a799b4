"""The command-line tools: ``mdgateway`` and its subcommands."""
