"""The agent: a provider-independent tool loop, the tool registry and the providers."""
