import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from microverse_site.roles import ADMIN, EXPERT, RESEARCHER

DEMO_ACCOUNTS = [
    ("expert1", EXPERT), ("expert2", EXPERT), ("expert3", EXPERT), ("admin", ADMIN), ("researcher", RESEARCHER),
]


class Command(BaseCommand):
    help = "Create one demo account per role (three experts). Passwords are random and printed once."

    def add_arguments(self, parser):
        parser.add_argument("--reset", action="store_true", help="Give existing demo accounts new passwords.")

    @transaction.atomic
    def handle(self, *args, reset=False, **options):
        User = get_user_model()
        printed = False
        for username, role in DEMO_ACCOUNTS:
            user, created = User.objects.get_or_create(username=username)
            user.groups.add(Group.objects.get_or_create(name=role)[0])
            if created or reset:
                password = secrets.token_urlsafe(12)
                user.set_password(password)
                user.save()
                self.stdout.write(f"  {username:<11} {role:<11} password: {password}")
                printed = True
        if printed:
            self.stdout.write("Demo accounts ready; the passwords above are not stored anywhere else.")
        else:
            self.stdout.write("Demo accounts already exist (run with --reset for new passwords).")
