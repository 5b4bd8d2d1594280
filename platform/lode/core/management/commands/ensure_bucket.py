from django.core.management.base import BaseCommand

from lode.core.artifacts import bucket_ensure


class Command(BaseCommand):
    help = "Creates the artifact store's bucket when it does not exist."

    def handle(self, *args, **options):
        bucket_ensure()
        from django.conf import settings

        self.stdout.write(f"bucket {settings.S3_BUCKET} ready")
