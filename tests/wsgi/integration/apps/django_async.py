"""A one-file Django project with async views (settings, URLs and views here; served by the
async-views tests through Django's WSGI handler, which calls async views with async_to_sync)."""

import asyncio
import hashlib
import json

import django
from django.conf import settings
from django.urls import path

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="corgi-test-not-secret",
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        DATABASES={},
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
        USE_TZ=True,
        DATA_UPLOAD_MAX_MEMORY_SIZE=None,
    )
    django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse, JsonResponse  # noqa: E402


async def sleep(request):
    seconds = float(request.GET.get("s", "1"))
    await asyncio.sleep(seconds)
    return JsonResponse({"slept": seconds})


async def upload(request):
    await asyncio.sleep(0.01)
    data = request.body  # the body arrives while this view waits for it
    return JsonResponse({"size": len(data), "sha256": hashlib.sha256(data).hexdigest()})


async def where(request):
    loop = asyncio.get_running_loop()
    return HttpResponse(json.dumps({"loop": type(loop).__name__}), content_type="application/json")


urlpatterns = [path("sleep", sleep), path("upload", upload), path("where", where)]

application = get_wsgi_application()
