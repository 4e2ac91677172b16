import os

from django.core.wsgi import get_wsgi_application

from config import startup

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# A missing secret key or database stops the server with one line, before it listens.
startup.load_settings_or_exit()
startup.check_database(unreachable_is_fatal=False)
application = get_wsgi_application()
