"""One module per `stormwatch` subcommand; each has `add_parser(subparsers)` setting `run`."""

MODULES = [
    "stormwatch.commands.up",
    "stormwatch.commands.ship",
    "stormwatch.commands.query",
    "stormwatch.commands.worker",
    "stormwatch.commands.demo",
    "stormwatch.commands.replay",
    "stormwatch.commands.actions",
    "stormwatch.commands.gateway",
    "stormwatch.commands.dashboards",
    "stormwatch.commands.top",
    "stormwatch.commands.report",
]
