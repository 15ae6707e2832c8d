"""The ``imagegate`` command's entry point.

The commands that talk to a running gateway (imagegate/remote.py) need neither the database nor
the web framework, whose imports take seconds on a loaded machine: they are run by an app of their
own, and everything else (``serve``, ``worker``, ``keys``, ``--help``…) by the whole CLI
(imagegate/cli.py), which has them too.
"""

from __future__ import annotations

import sys

REMOTE_COMMANDS = ("generate", "batch", "jobs")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in REMOTE_COMMANDS:
        from imagegate.remote import remote_app

        remote_app()
    else:
        from imagegate.cli import main as cli_main

        cli_main()
