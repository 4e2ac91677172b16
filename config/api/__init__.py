"""Cross-cutting HTTP plumbing shared by every app: error envelope, request id,
request logging and metrics, pagination, tenant-scoped base views, health checks."""
