"""Every write of the chat app, one module per concern:

- ``todos``: the user's to-do items (``Task`` rows), which the agent's tools act on.
- ``turns``: a turn is the user's message and the agent run answering it; storing one,
  answering it in the request, or handing it to a worker.
- ``runs``: one agent execution: its claim and lease, its state moves, executing it, and
  the sweep and the outbox relay that keep runs moving.

This package imports none of them, so importing one (the tools import ``todos``) does
not drag in the others."""
