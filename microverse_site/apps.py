from django.apps import AppConfig
from django.db.models.signals import post_migrate


def ensure_role_groups(**kwargs):
    """The three role groups exist after every migrate, with the model permissions each role uses in the admin."""
    from django.contrib.auth.models import Group, Permission

    from microverse_site.roles import ROLE_PERMISSIONS

    for role, codenames in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        perms = Permission.objects.filter(codename__in=codenames)
        group.permissions.add(*perms)


class MicroverseSiteConfig(AppConfig):
    name = "microverse_site"
    verbose_name = "MicroVerse site"

    def ready(self):
        post_migrate.connect(ensure_role_groups, sender=self)
