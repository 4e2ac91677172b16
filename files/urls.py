from config.api.routers import Router

from . import views

router = Router()
router.register("files", views.FileViewSet, basename="file")

urlpatterns = router.urls
