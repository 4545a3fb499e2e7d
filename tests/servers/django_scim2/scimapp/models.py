"""The models django-scim2's README asks for: its two mixins on a User and a Group model."""

from django.contrib.auth.models import AbstractUser
from django.db import models
from django_scim.models import AbstractSCIMGroupMixin, AbstractSCIMUserMixin


class Group(AbstractSCIMGroupMixin):
    name = models.CharField(max_length=254, unique=True)


class User(AbstractSCIMUserMixin, AbstractUser):
    scim_groups_m2m = models.ManyToManyField(Group, related_name="user_set", blank=True)

    @property
    def scim_groups(self):
        return self.scim_groups_m2m
