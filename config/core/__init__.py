"""What services, tasks and interfaces share below any transport: the application error
type, the request context and the metric objects. Imports no app and nothing of HTTP
(Django, DRF, Channels), so a service can use it without standing on the HTTP package;
``config/api`` builds the HTTP plumbing on top of it."""
