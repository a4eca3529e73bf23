from django.urls import path
from rest_framework.routers import DefaultRouter

from tests.testapp import views

router = DefaultRouter()
router.register("cameras", views.CameraViewSet, basename="camera")
router.register("allcams", views.AllFieldsCameraViewSet, basename="allcam")
router.register("failing", views.FailingCameraViewSet, basename="failing")
router.register("raising", views.RaisingAfterSaveViewSet, basename="raising")
router.register("seed", views.SeedStyleViewSet, basename="seed")
router.register("plain", views.PlainCameraViewSet, basename="plain")

urlpatterns = [*router.urls, path("chaos/rows/<int:row>/", views.chaos_row)]
