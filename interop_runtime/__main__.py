# the daemons' command lines skip typer and rich (cli/lean.py); everything else is the full CLI
from interop_runtime.cli.lean import main

main()
