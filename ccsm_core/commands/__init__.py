"""The core's CLI commands, one module per area. Modules import click only at top level."""
