"""`python -m duet_cli ...` runs the CLI (what launchers such as torchrun start)."""

from duet_cli.cli import main

if __name__ == "__main__":
    main()
