"""The `tally` command: thin click commands over the Python API.

Errors are mapped to exit codes in one place (`main`): 0 ok, 1 data or validation error, 2 usage error.
"""

from __future__ import annotations

import sys

import click

from tally.errors import TallyError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """tally: payments features on Spark, stored in Delta, joined point-in-time."""


@cli.command()
@click.option("--warehouse", default="warehouse", show_default=True, help="Warehouse root the demo writes to.")
def demo(warehouse: str) -> None:
    """Run the end-to-end demo on the embedded Spark session.

    \b
    Example:
      tally demo --warehouse ./warehouse
    """
    from tally import demo as demo_module

    demo_module.run(warehouse=warehouse, echo=click.echo)


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the click group and maps tally errors to exit codes."""
    try:
        cli.main(args=argv, standalone_mode=False)
    except TallyError as err:
        click.echo(f"error: {err}", err=True)
        return err.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.ClickException as err:
        err.show()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
