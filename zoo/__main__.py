"""``python -m zoo``: the same as the ``zoo`` command."""

from zoo.entry import main

if __name__ == "__main__":
    main()
