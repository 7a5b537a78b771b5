"""A minimal Django project with its settings in code, served by corgi (docs/wsgi.md):

    corgi --http 127.0.0.1:8000 --chdir "$PWD/examples/django_project" --wsgi project.wsgi:application
"""

import os

import django
from django.conf import settings
from django.core.wsgi import get_wsgi_application

HERE = os.path.dirname(os.path.abspath(__file__))

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="corgi-example-not-secret",
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF="project.urls",
        INSTALLED_APPS=[],
        DATABASES={},
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [os.path.join(HERE, "templates")]}],
        USE_TZ=True,
    )
    django.setup()

application = get_wsgi_application()
