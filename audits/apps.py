from django.apps import AppConfig


class AuditsConfig(AppConfig):
    name = "audits"

    def ready(self):
        # The composition of sealing: services ask for a seal through audits.sealing, which
        # this wires to the task module, so services never import the task module.
        from . import sealing, tasks

        sealing.seal_requester_set(tasks.request_seal, in_background=tasks.seal_in_background)
