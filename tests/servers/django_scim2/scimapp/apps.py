from django.apps import AppConfig


class ScimAppConfig(AppConfig):
    name = "tests.servers.django_scim2.scimapp"
    label = "scimapp"
