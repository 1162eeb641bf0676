"""The three roles (expert, admin, researcher) as Django groups, and the checks every view and endpoint uses."""
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission

EXPERT = "expert"
ADMIN = "admin"
RESEARCHER = "researcher"
ROLES = (EXPERT, ADMIN, RESEARCHER)

ROLE_DESCRIPTIONS = {
    EXPERT: "Biology expert: votes on candidate tasks, revises rubrics, verifies clips and checks captions.",
    ADMIN: "Admin: users and roles, panels, the action log, agreement, adjudication and releases.",
    RESEARCHER: "Researcher: runs the data pipeline, judge runs and training jobs; reads leaderboards.",
}


def user_roles(user) -> set[str]:
    """The roles of a user; cached on the user object for the request."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return set()
    cached = getattr(user, "_microverse_roles", None)
    if cached is None:
        cached = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
        if user.is_superuser:
            cached.add(ADMIN)
        user._microverse_roles = cached
    return cached


def has_role(user, *roles: str) -> bool:
    return bool(user_roles(user) & set(roles))


def role_required(*roles: str):
    """View decorator: anonymous users go to the login page, users without one of `roles` get 403."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not has_role(request.user, *roles):
                raise PermissionDenied(f"This page is for: {', '.join(roles)}.")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


any_role_required = role_required(*ROLES)


class HasAnyRole(BasePermission):
    """Default API permission: authenticated and holding at least one role."""

    message = "You need the expert, admin or researcher role."

    def has_permission(self, request, view):
        return has_role(request.user, *ROLES)


def api_role_permission(*roles: str) -> type[BasePermission]:
    """A DRF permission class that admits only the given roles."""

    class _HasRole(BasePermission):
        message = f"This endpoint is for: {', '.join(roles)}."

        def has_permission(self, request, view):
            return has_role(request.user, *roles)

    _HasRole.__name__ = "HasRole_" + "_".join(roles)
    return _HasRole


def roles_context(request):
    roles = user_roles(getattr(request, "user", None))
    return {"user_roles": sorted(roles), "is_expert": EXPERT in roles, "is_admin": ADMIN in roles,
            "is_researcher": RESEARCHER in roles}


# Model permissions given to each role's group (the site's own pages check roles; these serve the Django admin).
ROLE_PERMISSIONS = {
    EXPERT: ["view_benchmarktask", "view_rubricversion", "view_criterion"],
    RESEARCHER: ["view_benchmarktask", "view_rubricversion", "view_criterion", "view_benchmarkexport",
                 "add_benchmarkexport"],
    ADMIN: ["view_benchmarktask", "view_rubricversion", "view_criterion", "view_benchmarkexport",
            "add_benchmarkexport", "view_user", "change_user", "add_user", "view_group"],
}
