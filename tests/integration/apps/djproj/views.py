"""Views of the test Django project: text, JSON, a CSRF-exempt POST echo, streaming, async."""

from __future__ import annotations

import asyncio
import time

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt


def text(request):
    return HttpResponse(f"hello from django {request.path}", content_type="text/plain")


def as_json(request):
    return JsonResponse({"framework": "django", "q": request.GET.get("q"),
                         "script_name": request.META.get("SCRIPT_NAME", "")})


@csrf_exempt
def echo(request):
    return JsonResponse({"method": request.method, "content_type": request.content_type,
                         "body": request.body.decode(), "posted": request.POST.dict()})


def protected(request):
    return HttpResponse("never without a CSRF token")


def stream(request):
    def rows():
        for i in range(4):
            yield f"row {i}\n"
            time.sleep(0.05)

    return StreamingHttpResponse(rows(), content_type="text/plain")


async def astream(request):
    async def rows():
        for i in range(4):
            yield f"arow {i}\n"
            await asyncio.sleep(0.05)

    return StreamingHttpResponse(rows(), content_type="text/plain")


async def async_view(request):
    await asyncio.sleep(0.01)
    return JsonResponse({"async": True, "path": request.path})


def boom(request):
    raise RuntimeError("django view failed on purpose")
