#!/usr/bin/env python
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    from config import startup

    # A missing secret key or database is one clear line and exit 1, not a traceback.
    startup.load_settings_or_exit()
    if startup.manage_py_command(sys.argv) not in startup.COMMANDS_WITHOUT_DATABASE:
        startup.check_database()
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
