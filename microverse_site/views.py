from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Group
from django.contrib import messages
from django.db.models import Prefetch
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.http import require_POST

from microverse_site import roles, services
from rubrics import selectors as rubric_selectors


def healthz(request):
    """Liveness for load balancers and the load benchmark's trivial view: no role, no session, no database."""
    return HttpResponse("ok\n", content_type="text/plain")


def admin_login_redirect(request):
    """The database admin's login page sends people to the site's throttled login (any method: a password posted
    here is never checked), coming back to the admin page they asked for."""
    target = request.GET.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure()):
        target = reverse("admin:index")
    return redirect(f"{reverse('login')}?{urlencode({'next': target})}")


@login_required
def home(request):
    """One home page; each role sees the part of the site that is theirs."""
    level_counts = rubric_selectors.level_counts()
    context = {
        "level_counts": level_counts,
        "task_total": sum(level_counts.values()),
        "role_descriptions": [(r, roles.ROLE_DESCRIPTIONS[r]) for r in sorted(roles.user_roles(request.user))],
    }
    return render(request, "microverse_site/home.html", context)


@roles.role_required(roles.ADMIN)
def user_list(request):
    users = get_user_model().objects.order_by("username").prefetch_related(
        Prefetch("groups", queryset=Group.objects.filter(name__in=roles.ROLES), to_attr="role_groups")
    )
    return render(request, "microverse_site/user_list.html", {"users": users, "roles": roles.ROLES})


@require_POST
@roles.role_required(roles.ADMIN)
def user_set_roles(request, user_id: int):
    user = get_object_or_404(get_user_model(), pk=user_id)
    wanted = {r for r in request.POST.getlist("roles") if r in roles.ROLES}
    if user == request.user and roles.ADMIN not in wanted and not user.is_superuser:
        messages.error(request, "You cannot remove your own admin role.")
        return redirect("user-list")
    services.user_set_roles(user=user, roles=wanted)
    messages.success(request, f"{user.username}: roles now {', '.join(sorted(wanted)) or 'none'}.")
    return redirect("user-list")
