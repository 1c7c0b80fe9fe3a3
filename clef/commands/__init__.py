"""One module per `clef` subcommand (discovered automatically by clef.cli)."""
