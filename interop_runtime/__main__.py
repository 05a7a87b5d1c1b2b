from interop_runtime.cli.app import main

main()
