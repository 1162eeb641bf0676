from django.contrib.auth.models import Group
from django.db import transaction

from microverse_site.roles import ROLES


@transaction.atomic
def user_set_roles(*, user, roles: set[str]) -> None:
    """Make `roles` exactly the user's roles (other groups are left alone)."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles: {', '.join(sorted(unknown))}")
    user.groups.remove(*Group.objects.filter(name__in=set(ROLES) - set(roles)))
    user.groups.add(*(Group.objects.get_or_create(name=r)[0] for r in roles))
