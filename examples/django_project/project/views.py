from django.http import Http404, HttpResponse
from django.shortcuts import render

ITEMS = {1: "bone", 2: "ball", 42: "answer"}


def index(request):
    return HttpResponse("django on corgi\n", content_type="text/plain")


def item(request, pk):
    if pk not in ITEMS:
        raise Http404(f"no item {pk}")
    return render(request, "item.html", {"pk": pk, "name": ITEMS[pk], "script_name": request.META["SCRIPT_NAME"]})
