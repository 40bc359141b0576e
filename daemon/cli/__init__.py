"""The `fallwatch` command line: main parser, operator commands (admin/) and measuring tools (measure/)."""
