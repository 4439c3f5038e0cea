from django.urls import path
from project import views

urlpatterns = [
    path("", views.index),
    path("users/", views.user_count),
]
