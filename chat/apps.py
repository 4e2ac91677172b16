from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"

    def ready(self):
        # The composition of the run queue: services send runs through chat.queue, which
        # this wires to the Celery task, so services never import the task module.
        from . import queue, tasks

        queue.run_sender_set(tasks.send_runs, in_background=tasks.runs_in_background)
