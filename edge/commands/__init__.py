"""One module per `edge` subcommand; each exposes ``register(subparsers, parents)``."""
