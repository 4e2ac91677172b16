from config.api.routers import Router

from . import views

router = Router()
router.register("audits", views.AuditRecordViewSet, basename="audit")

urlpatterns = router.urls
