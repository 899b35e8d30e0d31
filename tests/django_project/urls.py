from django.urls import path

from tests.django_project import views

urlpatterns = [
    path("users/<int:user_id>/", views.user_view),
    path("class-users/<int:user_id>/", views.UserView.as_view()),
    path("users/<int:user_id>/refresh/", views.user_refresh_view),
    path("users/<int:user_id>/bypass/", views.user_bypass_view),
]
