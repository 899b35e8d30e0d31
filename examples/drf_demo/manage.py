#!/usr/bin/env python
"""Django's command-line entry point for the restflow demo project.

Run it through ``./scripts/demo.sh`` (from the repository root), which builds
the environment first and starts ``runserver --noreload``.
"""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "drf_demo.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
