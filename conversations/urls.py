from config.api.routers import Router

from . import views

router = Router()
router.register("conversations", views.ConversationViewSet, basename="conversation")

urlpatterns = router.urls
