from django.apps import AppConfig


class HubConfig(AppConfig):
    name = "hub"
    verbose_name = "Messaging hub"

    def ready(self):
        # The composition of the hub: conversations route outbound messages of bound
        # conversations through conversations.routing (wired here, so conversations never
        # imports the hub), and deliveries reach a worker through hub.queue.
        from conversations import routing

        from . import queue, tasks, views
        from .services import deliveries

        routing.router_set(deliveries.message_route_plan)
        routing.binder_set(views.conversation_bind)
        queue.delivery_sender_set(
            lambda delivery_id: tasks.deliver_message.delay(delivery_id),
            many=tasks.send_deliveries,
            in_background=lambda: not tasks.deliver_message.app.conf.task_always_eager,
        )
