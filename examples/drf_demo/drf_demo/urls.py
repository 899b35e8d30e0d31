"""The demo's two routes: the spec's function view and its APIView."""

from django.urls import path

from drf_demo.views import UserView, user_view

urlpatterns = [
    path("users/<int:user_id>/", user_view),
    path("class/users/<int:user_id>/", UserView.as_view()),
]
