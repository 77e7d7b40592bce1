from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from models_admin.selectors import model_version_get_production


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "chat/home.html", {"production": model_version_get_production()})
