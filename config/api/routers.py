from rest_framework.routers import SimpleRouter


class Router(SimpleRouter):
    """Every route answers with and without its trailing slash, never by redirecting."""

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"
